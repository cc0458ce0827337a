"""Backups: the manifest, the native archive format, and readers for other tools' archives."""
