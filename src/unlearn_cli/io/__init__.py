"""Files in and out: decoding and atomic writing of images, what a run protects, metadata."""
