"""headbench's built-in plugins, installed as ``bench_plugins``.

Each sub-package is one plugin, registered through the ``bench`` entry-point
group exactly as a third-party plugin would be (see ``pyproject.toml``).
"""
