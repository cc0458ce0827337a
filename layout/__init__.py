"""Disks and layouts: models, probing, identity matching, planning and previews."""
