"""Base models ftk brings in itself: GGUF files imported into normal Hugging Face folders
(`gguf_import`), and a small registry of real models it can fetch from the package registry (`fetch`)."""
