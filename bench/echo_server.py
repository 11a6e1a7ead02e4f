"""A trivial MCP server for the benchmark: one tool, `echo`, on the mcp 2.x SDK.

    python bench/echo_server.py              # stdio
    python bench/echo_server.py --http PORT  # Streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import sys
import warnings

from mcp.server.mcpserver import MCPServer

warnings.simplefilter("ignore")

server = MCPServer("bench-echo", log_level="WARNING")


@server.tool(description="Return the text it is given.")
def echo(text: str) -> str:
    return text


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    else:
        server.run("stdio")


if __name__ == "__main__":
    main(sys.argv[1:])
