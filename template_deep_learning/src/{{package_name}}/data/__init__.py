"""Data: the embedded sample digits, the image-folder dataset and its validation."""
