"""unetkit inside napari (npe2 plugin, the ``[napari]`` extra): the Segment widget and the built-in synthetic
nuclei as sample data. Importing this package imports no Qt; napari loads the widgets from ``napari.yaml``."""
