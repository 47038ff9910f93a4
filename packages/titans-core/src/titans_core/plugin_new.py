"""``titans-plugins new NAME``: a plugin package from the template (``titans_core/plugin_template``).

The package registers one component of each kind the memory uses — a memory model, an objective, a chunked update
rule — and a variant (a recipe whose blocks alternate), declares the plugin API version, and has a test per
component (``titans_memory.testing``, ``titans_attention.testing``) that passes as generated.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from titans_core.api import PLUGIN_API
from titans_core.errors import TitansUserError

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
TEMPLATE = "plugin_template"


def template_files() -> dict[str, str]:
    """Path (with placeholders) → text of every file of the template."""
    root = resources.files("titans_core") / TEMPLATE
    files: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".tmpl"):
                files[prefix + child.name.removesuffix(".tmpl")] = child.read_text(encoding="utf-8")

    walk(root, "")
    return files


def new_plugin(name: str, directory: Path) -> list[Path]:
    """Write the package ``name`` into ``directory`` (which must not exist); returns the files written."""
    if not _NAME.match(name):
        raise TitansUserError(
            f"invalid plugin name {name!r}: use lowercase letters, digits, '-' and '_', starting with a letter"
        )
    if directory.exists():
        raise TitansUserError(f"{directory} already exists: choose another name or --dir")
    module = name.replace("-", "_")
    values = {"__dist__": name, "__module__": module, "__prefix__": module, "__api__": PLUGIN_API}
    written = []
    for path, text in sorted(template_files().items()):
        for key, value in values.items():
            path, text = path.replace(key, value), text.replace(key, value)
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
