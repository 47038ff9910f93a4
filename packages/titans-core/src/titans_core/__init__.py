"""titans-core: protocols, the plugin registry and the spec schema shared by every Titans package."""

from titans_core.hookspecs import hookimpl, hookspec
from titans_core.protocols import KINDS, AttentionBlock, MemoryModel, UpdateRule, Variant

__all__ = ["hookimpl", "hookspec", "KINDS", "AttentionBlock", "MemoryModel", "UpdateRule", "Variant"]
__version__ = "0.1.0"
