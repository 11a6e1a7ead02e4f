"""The console's built-in themes, shipped in the package as `mcpguard.themes`.

The TOML files beside this one are the themes; `mcpguard.console.themes`
finds them with `importlib.resources.files("mcpguard.themes")`. This file
only makes the folder an importable package, so a wheel and an editable
install find the same files.
"""
