"""Writing model files in other formats (``phikit.export.gguf``: requantize a GGUF file)."""
