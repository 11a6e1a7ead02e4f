"""mcpguard: a terminal policy console for the Model Context Protocol.

The core (policy, ratelimit, risk, approvals, events, audit, gateway) never
imports `textual` or `rich`; the console and the CLI are front ends on it.
"""

__version__ = "0.1.0"
