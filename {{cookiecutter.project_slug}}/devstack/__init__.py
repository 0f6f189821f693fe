"""Local development stack without Docker (`make dev`) and its helpers."""
