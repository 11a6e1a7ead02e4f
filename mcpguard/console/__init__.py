"""The Textual console: screens, widgets, the key table and the themes loader.

Front end only: it may import textual and rich; the core never imports it.
"""

from mcpguard.console.app import ConsoleApp

__all__ = ["ConsoleApp"]
