"""One torch model saved in every format wwaudit reads: ONNX, safetensors (file and shards), GGUF.

The weights are rounded to float16 first, so that float16 storage (GGUF F16) is lossless and
every lossless format must give exactly the same spectra. GGUF files are written with the `gguf`
package's own writer and quantizer; GGUF stores a 2-D weight as ne = [in, out], which the
writer derives from the numpy array ([out, in], torch's layout).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SHAPES = {"embed": (512, 64), "fc1": (256, 64), "fc2": (128, 256), "head": (96, 128)}


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(*SHAPES["embed"])
        self.fc1 = torch.nn.Linear(64, 256)
        self.fc2 = torch.nn.Linear(256, 128)
        self.head = torch.nn.Linear(128, 96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(self.embed(x))))))


def net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model = Net().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))  # float16-exact: F16 storage is lossless
    return model


def state(model: Net) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def save_onnx(model: Net, path: Path) -> Path:
    torch.onnx.export(model, (torch.zeros(1, 5, dtype=torch.long),), str(path), dynamo=False)
    return path


def save_safetensors(model: Net, path: Path) -> Path:
    from safetensors.numpy import save_file

    save_file(state(model), str(path))
    return path


def save_sharded(model: Net, folder: Path, config: dict | None = None) -> Path:
    """Two shards and model.safetensors.index.json, as transformers' save_pretrained writes them."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = state(model)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, members in shards.items():
        save_file({n: tensors[n] for n in members}, str(folder / shard))
        weight_map.update({n: shard for n in members})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def save_gguf(model: Net, path: Path, qtype: str = "F16") -> Path:
    """2-D weights as `qtype` (F16, Q8_0, Q4_0...), biases as float32, as llama.cpp's converter does."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "wwaudit-test")
    for name, arr in state(model).items():
        if arr.ndim == 2 and qtype == "F16":
            writer.add_tensor(name, arr.astype(np.float16))
        elif arr.ndim == 2:
            q = gguf.GGMLQuantizationType[qtype]
            writer.add_tensor(name, gguf.quants.quantize(arr, q), raw_dtype=q)
        else:
            writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
