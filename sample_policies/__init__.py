"""The sample policies, shipped in the package as `mcpguard.sample_policies`.

The TOML and JSON files beside this one are the policies; code finds them
with `importlib.resources.files("mcpguard.sample_policies")`. This file
only makes the folder an importable package, so a wheel and an editable
install find the same files.
"""
