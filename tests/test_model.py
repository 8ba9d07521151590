import torch
from torch.nn import functional as F

from edgesdk.data import vocabulary
from edgesdk.zoo.tiny_sd import GroupNorm, LayerNorm, TinySD, TinySDConfig, ddpm_schedule


def test_groupnorm_matches_torch():
    torch.manual_seed(0)
    norm = GroupNorm(8, 32)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 32, 8, 8) * 3 + 1
    assert torch.allclose(norm(x), F.group_norm(x, 8, norm.weight, norm.bias, 1e-5), atol=1e-5)


def test_layernorm_matches_torch():
    torch.manual_seed(0)
    norm = LayerNorm(16)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 5, 16) * 2
    assert torch.allclose(norm(x), F.layer_norm(x, (16,), norm.weight, norm.bias, 1e-5), atol=1e-5)


def test_schedule_is_scaled_linear():
    cfg = TinySDConfig()
    abar = ddpm_schedule(cfg)
    assert abar.shape == (1000,)
    assert abs((1 - abar[0]) - 0.00085) < 1e-9  # first beta
    assert abs(abar[-1] - 0.0047) < 1e-3  # SD's final alpha-bar


def test_shapes_and_token_ids():
    cfg = TinySDConfig(unet_channels=(16, 32), text_width=32, vae_channels=(8, 16, 16), groups=4)
    model = TinySD(cfg, vocabulary()).eval()
    ids = model.token_ids(["a red star", ""])
    tokens = model.vocabulary.tokens
    assert [tokens[i] for i in ids[0][:5]] == ["<bos>", "a", "red", "star", "<eos>"]
    assert [tokens[i] for i in ids[1][:3]] == ["<bos>", "<eos>", "<pad>"]
    with torch.no_grad():
        text = model.encode_text(["a red star", ""])
        assert text.shape == (2, cfg.max_tokens, cfg.text_width)
        latent = torch.randn(2, 4, 8, 8)
        assert model.unet(latent, torch.tensor([10.0, 900.0]), text).shape == latent.shape
        moments = model.vae.encoder(torch.rand(2, 3, 32, 32) * 2 - 1)
        assert moments.shape == (2, 8, 8, 8)
        image = model.vae.decoder(latent)
        assert image.shape == (2, 3, 32, 32) and image.abs().max() <= 1
