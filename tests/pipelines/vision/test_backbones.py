import pytest
import torch

from pipelines.vision.backbones import (
    BackboneError, SplitBackbone, create_backbone, load_backbone_weights, packaged_weight_file)


def test_unknown_timm_name_is_a_clear_error():
    with pytest.raises(BackboneError, match="unknown timm model 'efficientnet_lite0_typo'"):
        create_backbone("efficientnet_lite0_typo", "none")


def test_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        create_backbone("tf_efficientnet_lite0", f"file:{tmp_path / 'absent.pth'}")
    with pytest.raises(BackboneError, match="unknown packaged weights"):
        create_backbone("tf_efficientnet_lite0", "packaged:resnet9000")


def test_wrong_weights_for_backbone_is_a_clear_error():
    with pytest.raises(BackboneError, match="do not fit this backbone"):
        create_backbone("mobilenetv2_100", "packaged:efficientnet_lite0")


@pytest.mark.parametrize("name,weights", [("tf_efficientnet_lite0", "packaged:efficientnet_lite0"),
                                          ("mobilenetv2_100", "packaged:mobilenet_v2")])
def test_packaged_weights_fill_every_tensor(name, weights):
    path = packaged_weight_file(weights.split(":")[1])
    assert path.is_file() and path.suffix == ".pth"
    model, info = create_backbone(name, weights)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    # first conv of the file equals the model's stem conv (by name or by order)
    first = next(v for v in raw.values() if v.ndim == 4)
    torch.testing.assert_close(model.conv_stem.weight, first)
    assert info["source"] == "file" and info["tensors"] == len(model.state_dict())


def test_file_weights_round_trip(tmp_path):
    src, _ = create_backbone("tf_efficientnet_lite0", "none")
    p = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, p)
    dst, _ = create_backbone("tf_efficientnet_lite0", "none")
    load_backbone_weights(dst, p)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_split_backbone_prefix_trunk_equals_full_forward():
    torch.manual_seed(0)
    model, _ = create_backbone("tf_efficientnet_lite0", "none")
    bb = SplitBackbone(model, trainable_blocks=2).eval()
    assert bb.has_prefix and bb.split_at == len(model.blocks) - 2
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(bb.trunk(bb.prefix(x)), model(x))
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.5", "blocks.6", "conv_head", "bn2"}
    bb.set_trainable_blocks(0)
    assert not any(p.requires_grad for p in model.parameters())
