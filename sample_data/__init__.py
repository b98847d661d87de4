"""The bundled sample volumes, installed as the package ``napari_dmd._sample`` (see pyproject.toml)."""
