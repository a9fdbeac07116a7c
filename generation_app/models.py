"""generation_app orchestrates the other apps; its records live in jobs_app and collections_app."""
