"""Bundles: the manifest format, files and hashes, the store, install, signing, hot swap, push, reindex."""
