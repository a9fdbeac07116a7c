"""The `comfy_workflow` node: a workflow's ComfyUI graph run on its staff-registered server."""
