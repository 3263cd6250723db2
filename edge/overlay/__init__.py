"""Teach on the spot: card views taught on this device, kept beside the bundle's references."""
