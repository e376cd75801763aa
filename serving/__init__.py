"""Live serving: ONNX export of registered models (`export`), the bundle runtime (`bundle`), and the
BentoML service (`service`) with what it serves (`models`), how it answers (`predictions`), its
request schemas, API-key gate, metrics, prediction log and registry lookup."""
