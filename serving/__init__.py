"""Live serving (BentoML service, ONNX export, paper trader). Not built yet: see README, "Status"."""
