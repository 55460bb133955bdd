"""Datasets, boxes and loaders (scan a folder, build training views, resumable sampling)."""
