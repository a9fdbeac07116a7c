"""The gallery: the landing page, a collection's outputs (live while a job runs) for its owner or
the holder of a signed link, and the public page of a published collection."""
