"""Image-quality metrics, one file each: FID and KID on Inception features (`fid`, `kid`,
`inception`, `reference`), paired L1/PSNR/SSIM (`paired`), diversity, and the style probe
(`style`). Import the module you need (`from spade.metrics.kid import …`): each stage then
depends on the metric files it uses, not on all of them."""
