"""Infrastructure the layers above share: process-group plumbing (``distributed``) and progress reporting."""
