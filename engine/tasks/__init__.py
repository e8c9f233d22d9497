"""Task registry (the seed study's and MarCon's tasks) and loaders for hub and local task files.

Importing this package is cheap: Hugging Face `datasets` is imported only when a hub task is loaded.
"""
