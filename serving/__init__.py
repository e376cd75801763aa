"""Live serving: ONNX export of registered models (`export`), the bundle runtime (`bundle`), and the
BentoML service (`service`) with its request schemas, prediction log and registry lookup."""
