"""napari-dmd as napari's reader and writer of its medical file types, without asking.

Reading: npe2 has no reader priority: napari asks whenever two plugins accept a file (its own builtins
accept any file name) unless its setting ``plugins.extension2reader`` names one for the pattern. At the
plugin's activation (the first use of any of its contributions: the dock, a sample, a reader or writer),
each pattern of the manifest's reader that has no preference yet gets napari-dmd, and napari keeps it in
its settings; a preference the user set is never changed (File → Preferences → Plugins changes them).
``viewer.open(path, plugin=None)`` follows the preference (napari's ``viewer.open(path)`` means its builtins).

Saving: File → Save's dialog hands the writer of the filter it starts with (napari's, for TIFF) to
``viewer.layers.save``; ``route_saves`` makes a save to one of napari-dmd's extensions use napari-dmd's writer
whatever that filter, so the review record is written beside the labels.
"""
from __future__ import annotations

from typing import Any

PLUGIN = "napari-dmd"


def reader_patterns() -> list[str]:
    """The file name patterns of the plugin's reader, from its manifest."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return [p for reader in manifest.contributions.readers or () for p in reader.filename_patterns]


def writer_extensions() -> tuple[str, ...]:
    """The file extensions of the plugin's writers, from its manifest."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return tuple({e for writer in manifest.contributions.writers or () for e in writer.filename_extensions})


def prefer_reader() -> list[str]:
    """Make napari-dmd the reader of its patterns that have no preference yet; returns those patterns."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    chosen = dict(plugins.extension2reader)
    new = [p for p in reader_patterns() if p not in chosen]
    if new:
        plugins.extension2reader = {**chosen, **dict.fromkeys(new, PLUGIN)}
    return new


def activate(_context: Any = None) -> None:
    """The plugin's activation (npe2 ``on_activate``): napari-dmd reads its file types without asking."""
    from napari.utils.notifications import show_info

    preferred = prefer_reader()
    if preferred:
        show_info(f"File → Open now reads {', '.join(preferred)} with napari-dmd without asking "
                  "(File → Preferences → Plugins changes it)")


def route_saves(viewer: Any) -> None:
    """Saves of ``viewer``'s layers to napari-dmd's extensions go to napari-dmd's writer, whatever writer the
    save dialog's filter chose."""
    layers = getattr(viewer.layers, "__wrapped__", viewer.layers)
    save, ours = layers.save, writer_extensions()

    def routed(path: str, *, selected: bool = False, plugin: str | None = None, _writer: Any = None) -> list[str]:
        if str(path).lower().endswith(ours) and (plugin or getattr(_writer, "plugin_name", PLUGIN)) != PLUGIN:
            plugin, _writer = PLUGIN, None
        return save(path, selected=selected, plugin=plugin, _writer=_writer)

    layers.save = routed
