"""Data in: readers, images, spot patches, gene panels and prepared datasets."""
