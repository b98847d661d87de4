"""napari-dmd as the preferred reader of its file types, so File → Open does not ask 'Choose reader' each time.

npe2 has no reader priority: napari asks whenever two plugins accept a file (its own builtins accept any
file name) unless its setting ``plugins.extension2reader`` names one for the pattern. When the dock opens,
each pattern of the manifest's reader that has no preference yet gets napari-dmd; a preference the user set
is never changed (File → Preferences → Plugins changes them).
"""
from __future__ import annotations

PLUGIN = "napari-dmd"


def reader_patterns() -> list[str]:
    """The file name patterns of the plugin's reader, from its manifest."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return [p for reader in manifest.contributions.readers or () for p in reader.filename_patterns]


def prefer_reader() -> list[str]:
    """Make napari-dmd the reader of its patterns that have no preference yet; returns those patterns."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    chosen = dict(plugins.extension2reader)
    new = [p for p in reader_patterns() if p not in chosen]
    if new:
        plugins.extension2reader = {**chosen, **dict.fromkeys(new, PLUGIN)}
    return new
