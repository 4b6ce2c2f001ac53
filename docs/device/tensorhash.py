"""sha256 over every tensor of a converted model folder (sorted by name; dtype, shape and raw bytes)."""
import hashlib, sys
from pathlib import Path
from safetensors import safe_open
h = hashlib.sha256()
for f in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with safe_open(str(f), "pt") as s:
        for k in sorted(s.keys()):
            t = s.get_tensor(k).contiguous()
            h.update(k.encode()); h.update(str(t.dtype).encode()); h.update(str(tuple(t.shape)).encode())
            h.update(t.view(-1).view(__import__("torch").uint8).numpy().tobytes())
print(h.hexdigest())
