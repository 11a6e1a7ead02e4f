"""The Textual console: screens, widgets, the key table and the themes loader.

Front end only: it may import textual and rich; the core never imports it.
`ConsoleApp` is loaded on first use, so importing the package (as
`pkgutil.walk_packages` does) does not load Textual.
"""

from typing import Any

__all__ = ["ConsoleApp"]


def __getattr__(name: str) -> Any:
    if name == "ConsoleApp":
        from mcpguard.console.app import ConsoleApp

        return ConsoleApp
    raise AttributeError(name)
