"""Records of published pretrained checkpoints (see
:mod:`workflow.backbones.weights` for how a config names them and how
their files are read).

A **record** (:class:`WeightsRecord`) declares one published checkpoint:
its address, its checksum (the publisher's sha256 or md5, checked before
the file is used), the architecture it is for, the input it was trained on
(mean and std per channel of pixels in [0, 1], crop and resize sides) and
its metadata. Code asks the record; nothing else repeats its numbers.
Records:

- torchvision's ImageNet weights for the architectures built here, named
  as torchvision spells them (``ResNet18_Weights.IMAGENET1K_V1``,
  ``ResNet50_Weights.IMAGENET1K_V1``/``V2``, ``Swin_T_Weights.IMAGENET1K_V1``):
  made from torchvision's ``Weights`` enums (URL, transforms, metadata); the
  checksum is the sha256 prefix in the file name, which is what torchvision
  publishes and ``torch.hub`` checks;
- ``resnet18_places365``: the CSAIL Places365 ResNet-18 of the LM paper
  (see :data:`RESNET18_PLACES365`); its publisher gives no checksum, so a
  config must pin one.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflow.checksums import describe_checksums


@dataclass(frozen=True)
class WeightsRecord:
    """One pretrained checkpoint, as its publisher distributes it.

    ``sha256`` may be the prefix the publisher gives (at least 8 hex
    digits); ``md5`` and ``sha256`` both None: the publisher gives none (a
    config must pin one). ``arch``: the registered backbone whose state
    dict it is (None for a file of your own: its keys and shapes are checked
    when it loads). ``path``: a local file named in the config, read instead
    of the mirror or the address.
    """

    name: str
    arch: str | None
    url: str | None
    file_name: str
    md5: str | None
    sha256: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int | None  # side of the crop it was trained and evaluated on
    resize_size: int | None = (
        None  # shorter side resized to before that crop (evaluation)
    )
    num_classes: int | None = None
    publisher: str = ""  # who publishes it, and where each number comes from
    notes: str = ""
    path: str | None = None

    @property
    def pinned(self) -> bool:
        return bool(self.md5 or self.sha256)

    def checksums(self) -> str:
        return describe_checksums(self.md5, self.sha256)


RESNET18_PLACES365 = WeightsRecord(
    name="resnet18_places365",
    arch="resnet18",
    # The address CSAILVision/places365's README links (the publisher
    # documents http only). The file is a dict: state_dict (keys prefixed
    # `module.`), epoch, arch, best_prec1.
    url="http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar",
    file_name="resnet18_places365.pth.tar",
    md5=None,
    sha256=None,
    # CSAILVision/places365 train_placesCNN.py trains with
    # transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224,
    # 0.225]) (ImageNet's statistics, not Places365's) on RandomSizedCrop(224);
    # run_placesCNN_basic.py evaluates Scale(256), CenterCrop(224) with the
    # same Normalize.
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    input_size=224,
    resize_size=256,
    num_classes=365,
    publisher="CSAILVision/places365 (Zhou et al., Places365-Standard ResNet-18)",
    notes=(
        "CSAIL publishes no checksum for this file. A third-party setup script checks "
        "md5 7a8808eefd4ea7458650ca84855f69b1 (not confirmed by the publisher, nor by us)."
    ),
)

RECORDS: dict[str, WeightsRecord] = {RESNET18_PLACES365.name: RESNET18_PLACES365}

# torchvision's Weights enums for the architectures workflow/backbones builds
# with torchvision's state-dict layout (cifar_resnet18's stem differs).
TORCHVISION_ENUMS = {
    "ResNet18_Weights": "resnet18",
    "ResNet50_Weights": "resnet50",
    "Swin_T_Weights": "swin_t",
}


def register_weights(record: WeightsRecord) -> WeightsRecord:
    """Add a record (e.g. a checkpoint of your own that several configs use)."""
    RECORDS[record.name] = record
    return record


def torchvision_record(enum_name: str, member: str) -> WeightsRecord:
    """The record of torchvision's ``<enum_name>.<member>``, from the enum."""
    import torchvision
    from torch.hub import HASH_REGEX

    weights = getattr(torchvision.models, enum_name)[member]
    transforms = weights.transforms()
    file_name = weights.url.rsplit("/", 1)[1]
    return WeightsRecord(
        name=f"{enum_name}.{member}",
        arch=TORCHVISION_ENUMS[enum_name],
        url=weights.url,
        file_name=file_name,
        md5=None,
        sha256=HASH_REGEX.search(file_name).group(
            1
        ),  # what torch.hub's check_hash compares
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        input_size=transforms.crop_size[0],
        resize_size=transforms.resize_size[0],
        num_classes=len(weights.meta["categories"]),
        publisher=f"torchvision {torchvision.__version__}: torchvision.models.{enum_name}.{member}",
        notes=f"recipe {weights.meta.get('recipe', '?')}; the checksum is the sha256 prefix in the file name",
    )


def _torchvision_members() -> list[str]:
    import torchvision

    # Iterating an enum skips aliases: DEFAULT (which moves between
    # torchvision versions) is not a record; name the version.
    return [
        f"{e}.{m.name}"
        for e in TORCHVISION_ENUMS
        for m in getattr(torchvision.models, e)
    ]


def weights_names() -> list[str]:
    """Every record name a config may give."""
    return sorted(RECORDS) + _torchvision_members()


def get_record(name: str) -> WeightsRecord | None:
    if name in RECORDS:
        return RECORDS[name]
    enum_name, _, member = name.partition(".")
    if enum_name in TORCHVISION_ENUMS and name in _torchvision_members():
        return torchvision_record(enum_name, member)
    return None
