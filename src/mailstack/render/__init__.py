"""Pure renderers: settings in, file contents out. Nothing here touches disk or processes."""

from mailstack.render.files import RenderedFile

__all__ = ["RenderedFile"]
