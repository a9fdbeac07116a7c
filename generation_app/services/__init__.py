"""generation_app services: accepting generation requests, running node runs, control, reaping."""
