"""The values and their files: a fitted `Vector` and its calibration (`vector`, saved as safetensors), other tools'
vectors and the formats a vector is exported to (`interop`; `tensors` checks a vector held in memory), and a concept
folder of JSONL (`concept`)."""
