"""The core contract: the Attack and Defense base classes and their shared identity (Component), errors,
validation, the threat model, the model-state guard, and the few ideas every layer uses once (the margin and
losses, the seeded RNG, the EOT average). Imports nothing else of shieldkit."""
