"""The shared kernel: what every service agrees on and nothing else (standard library and Pydantic
only; import-linter holds it to that). The vocabularies services exchange (`vocabulary`) and one
frozen Pydantic model per event subject (`events`), built by producers and validated by consumers.
"""
