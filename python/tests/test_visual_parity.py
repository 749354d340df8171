"""The reference ModifiedResNet equals open_clip's on the same random RN50 weights."""

import torch

from lightcap_train.reference.export import relative_error
from lightcap_train.reference.model import ModifiedResNet

from helpers import randomize_batchnorm


def test_modified_resnet_matches_open_clip(open_clip):
    torch.manual_seed(0)
    peer = open_clip.create_model("RN50", pretrained=None).visual.eval()
    randomize_batchnorm(peer, torch.Generator().manual_seed(1))
    ours = ModifiedResNet([3, 4, 6, 3], output_dim=1024, heads=32, image_size=224, width=64).eval()
    ours.load_state_dict(peer.state_dict(), strict=True)  # same names, same shapes

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        peer_grid = peer.forward_intermediates(x, intermediates_only=True)["image_intermediates"][-1]
        peer_pooled = peer(x)
        grid, pooled = ours.forward_grid(x), ours(x)
    assert grid.shape == (2, 2048, 7, 7)
    grid_err, pool_err = relative_error(grid, peer_grid), relative_error(pooled, peer_pooled)
    print(f"ModifiedResNet vs open_clip: grid rel. max diff {grid_err:.2e}, pooled {pool_err:.2e}")
    assert grid_err <= 1e-5
    assert pool_err <= 1e-5
    assert peer_grid.std() > 0.1  # a non-degenerate comparison
