"""Live serving: ONNX export of registered models (`export`), the bundle runtime (`bundle`), and the
BentoML service (`service`) with what it serves (`models`), how it answers (`predictions`), its
request schemas (a batch as JSON or as Arrow: `batch_body`, `arrow_batch`), API-key gate, metrics,
prediction log and registry lookup."""
