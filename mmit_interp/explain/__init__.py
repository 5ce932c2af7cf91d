"""Explanations: where in each frame a model finds each action, and how far each map can be trusted.

- `cam`: CAM and Grad-CAM for every requested class from one pass (`BaseCAM`: one `weights` per method).
- `mcam`: the paper's multi-label combination (mCAM) and plain max-of-CAMs on top of any maps.
- `render`: heat overlays, mCAM colouring, frame and video writers.
- `localisation`: pointing game, energy in box and ownership against true boxes.

Measured (issue 15): more map methods, faithfulness / sanity / modality metrics, one table:
- `methods`: Grad-CAM++, occlusion, RISE in 3-D, Integrated Gradients and a random-map baseline, each a
  small `cam.BaseCAM` subclass giving maps `(N, classes, T, H, W)` like `cam.LinearCAM` / `cam.GradCAM`.
- `faithfulness`: deletion / insertion curves over space-time voxels against a blurred clip, their AUC.
- `sanity`: cascading randomisation of the parameters from the head down (Adebayo et al. 2018).
- `modality`: the exact Shapley split of a fusion model's scores between video and audio; audio CAM.
- `table`: `run_explanations`, the method x metric table behind `mmit-analyze explanations`.
"""
