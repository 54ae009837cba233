"""Tasks built on the loaded models, each ``preprocess -> forward -> postprocess`` with plain-Python in and out.

``zero_shot`` (labels -> probabilities), ``retrieval`` (exact top-k), ``captioning`` (BLIP captions and VQA),
``ocr`` (text read from images). Modules import their heavy dependencies only when used.
"""
