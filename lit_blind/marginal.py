r"""Coarse-to-fine EM blind deconvolution with a diffusion (or any denoiser) prior — beyond the paper.

The paper's Algorithms 1–2 minimise ℓ_y(x, θ) jointly and, on real blur, fall toward the no-blur kernel
(§5). This engine follows the MAP-over-the-kernel lineage of Levin, Weiss, Durand & Freeman (2011) instead:

* **E-step** (image): half-quadratic splitting with the prior's denoiser at an annealed level σ_t,
  :math:`x_p = \operatorname{argmin}_x \|h\star x - y\|^2 + \rho\|x - z\|^2` (CG on the valid domain),
  :math:`z = D(x_p, \sigma_t)`; ``inner`` such pairs per outer iteration. σ_t decreases geometrically over the
  whole pyramid (``sigma_start`` → ``sigma_end``), so early steps see a strong prior. It ends at the
  photograph's noise level, ``SIGMA_END_PER_NOISE`` · σ_y (σ_y estimated by
  :func:`~lit_blind.metrics.noise_level` unless given), no lower than the prior's ``sigma_min`` (eleventh
  session; a fixed 0.015 before, tuned at σ_y = 0.01): a denoiser level above what the noise calls for leaves
  the E-step's image smoother than the photograph allows and the kernel fitted to it wider, one below it lets
  noise into the edges. The factor keeps the tuned end at σ_y = 0.01; the rule was then measured at other noise
  levels and on the Levin captures (README). ρ stays fixed along the schedule: a split weight that follows the
  denoiser's level as in DPIR, ρ_t = ρ (σ_end/σ_t)² (the same ρ at the end, ≈ 25× smaller at the start; the
  E-step's Gaussian then has the fixed noise level √ρ σ_end), was worse on the 20 Levin captures it ran on
  (sixteenth session, issue 11's harness, large init: 10/20 at ER ≤ 3, mean ER 4.35, median 2.99 against the
  default's 14/20, 2.80, 2.39; im4_kernel3 6.14 → 1.92, but im1_kernel4 1.16 → 20.2 and im2_kernel6 2.45 → 14.4),
  and DPIR's own weight, ρ_t = 4.35 (σ_y/σ_t)², worse on the first three of them (im4_kernel4 7.42 → 17.9).
* **Covariance term**: the kernel step adds :math:`c\,\|h\|^2` with
  :math:`c = \operatorname{tr}(\nabla C \nabla^\top)`, the summed posterior variance of the image gradients,
  :math:`C = \sigma_t^2 (H^\top H/\rho + I)^{-1}` the covariance of the HQS image given z (closed form in
  Fourier, circular approximation). This is Levin et al.'s term that makes the no-blur kernel costly when x is
  uncertain (their eq. 9 with a diagonal covariance). By default the trace runs over every pixel, although the
  kernel step sees only the kept edge gradients; ``covariance="kept"`` counts the kept pixels only, which is what
  the masked data term's expectation gives for a stationary variance (≈ 26× smaller at k = 31 on a 255²
  image). Measured (README, 4 iterations per level): on the 32 real Levin captures the kept-pixel form scores
  21/32 at ER ≤ 3 instead of 15/32, but on synthetic blurs (the ``make demo`` photo, BSD68 with turned Levin
  kernels) the weaker term lets kernels collapse toward the Dirac (demo kernel error 0.80 vs 0.43, PSNR
  −0.23 dB vs +0.80 dB), so the default stays the full trace (``covariance="full"``). ``covariance="tweedie"``
  replaces C by the per-pixel Tweedie variance σ_t² diag(∂ J_D ∂ᵀ) of the gradients
  (:func:`tweedie_gradient_variance`), each kernel entry weighted by the variance of the kept gradients it
  multiplies: no constant at all. The Jacobian is taken at x_p + σ_t n, an
  input at the denoiser's noise level: at the clean HQS image x_p itself the learned denoiser is off its
  training distribution and its Jacobian is not a covariance (measured on camera: tr J/d = −1.85 at σ = 0.05
  against 0.21 with the noise). Measured (README): it behaves like the kept-pixel form — better on the Levin
  captures, the same collapse on the demo photo — so the question is the calibration between real and
  synthetic blur, not the per-pixel shape of the variance. ``covariance="hqs"`` (ninth session) is the exact
  covariance of the Gaussian whose mean the E-step computes: :math:`x_p` minimises
  :math:`(\|h\star x - y\|^2 + \rho\|x - z\|^2)/(2\sigma_y^2)`, so
  :math:`C = \sigma_y^2 (H^\top H + \rho I)^{-1}`, the ``full`` formula with σ_t² replaced by σ_y²/ρ. The term
  then follows the noise of the photograph (σ_y estimated by :func:`~lit_blind.metrics.noise_level` unless
  given; at each coarser level the noise that the resampling leaves, :func:`resampled_noise_std`): weak on the
  Levin captures (σ̂_y ≈ 0.003), stronger than ``full`` at the finest level of a photograph with σ_y = 0.01.
  Measured (README): better than ``full`` on the 32 Levin captures (21/32, mean error ratio 2.97 vs 20/32,
  3.06 from the large initialisation; 23/32, 2.86 vs 21/32, 3.06 from the small one), on synthetic blurs
  (BSD68) a lower kernel error at σ_y = 0.003 and 0.02 but never more successes and a higher mean error ratio
  at 0.01 and 0.02, so not the default. ``covariance="none"`` is joint MAP over
  (x, h) with the same steps.
* **M-step** (kernel): the gradient-domain problem
  :math:`\min_{h\ge 0} \sum_d \|\partial_d z \star h - \partial_d y\|^2 + c\|h\|^2` solved to its optimum on
  the k×k support (normal equations built by FFT, Toeplitz approximation of the Gram matrix; FISTA on h ≥ 0),
  with only the strongest gradients of z kept (``edges`` × 4k pixels, as in Cho & Lee 2009, but whatever their
  direction: "Edges of every direction" below; ``finest_edges`` × 4k at the finest level, "Finest level" below),
  ranked by their magnitude times Xu & Jia's (2010) usefulness
  of the blurry y over ``edge_window`` pixels (:func:`edge_usefulness`: ≈ 1 on isolated straight edges, small
  in texture and fine stripes), then entries below 5 % of the maximum and connected components below 5 % of the
  mass removed (:func:`prune_kernel`), unit sum, centre of mass moved to the centre. The selection costs
  accuracy even with the true image in place of z (the dropped gradients still shape y: on the 32 Levin
  captures the mean error ratio of the kernel step on the true image is 0.59 with every gradient and 1.09 with
  the selection, ``benchmarks/levin_compare.py``), but with an estimated z, whose weak gradients are wrong, every
  gradient is far worse (README). ``kernel_image="hqs"`` fits the E-step's HQS image x_p instead of
  z = D(x_p, σ_t): x_p is the mean of the Gaussian whose covariance the term counts, so the expectation is then
  taken under one distribution. Measured (sixteenth session, issue
  11's harness, all 32 Levin captures, large init): 24/32 at ER ≤ 3, mean ER 4.45, median 1.88, kernel error
  0.574 against z's 26/32, 2.48, 2.16, 0.567 — a lower error ratio on 16 of 32; the striped shirt's streaks
  go (im4_kernel3 6.14 → 1.53), but the kernel step on x_p can lock onto a wrong shape from the coarsest level
  on, under the uniform start (im2_kernel3 1.43 → 69.8: a wide U from the 5-px level on, traced level by
  level). On the finest level only it changes little (25/32, mean ER 2.49, median 2.06, kernel error 0.567).
  So z stays.
* **Refinement** (thirteenth session): the last ``refine`` (2) kernel steps of the finest level take the
  covariance term over the kept edge pixels only, the expectation of the masked data term that
  ``covariance="kept"`` uses throughout, instead of the full trace. The full trace is ≈ 26× larger: it keeps the
  path away from the no-blur kernel while the kernel forms, but at the end it mostly widens the estimate (the
  ridge spreads the mass: the estimated Levin kernels are ≈ 3 pixels thick where the true ones are 1). Without
  any term in those steps (joint MAP) the kernel fits the noise of a noisier photograph (BSD68 at σ_y = 0.02:
  kernel error 0.70 instead of 0.57); the kept-pixel term, which grows with σ_y², holds it (0.58). Measured
  (README): better on the 32 Levin captures in every measure and at σ_y = 0.003 in error ratio; on synthetic
  blurs at σ_y = 0.01 the same error ratios with an 11 % higher kernel error. No effect with
  ``covariance="none"`` or ``"kept"``, nor with ``"tweedie"``, whose per-pixel variance counts the kept pixels.
* **Finest level** (fifteenth session): its E-steps run ``finest_inner`` (4) HQS pairs per outer iteration
  instead of ``inner`` (2). With the true kernel held fixed, two pairs from y leave the image short of the
  E-step's fixed point, and the kernel step on it misses the truth (error ratio 3.5 on im4_kernel2/4/6 where
  32 pairs give 1.5–2.4, README), and alternating kernel steps with 2 pairs each drift away from the truth where
  16 pairs each stay near it (issue 11's notes). The finest level is where the kernel's final shape forms and
  where a denoiser call costs most, so only there.
  **Tuned constant**: 2 / 4 / 6 pairs on all 32 Levin captures (harness of issue 11): 24 / 26 / 25 of 32 at
  ER ≤ 3, mean ER 2.58 / 2.48 / 2.45, kernel error 0.574 / 0.567 / 0.563, 1 / 1.4 / 2.1× the time; then run
  once on BSD68 at three noise levels, photographs and kernels it was not chosen on (README).
  Its kernel steps keep ``finest_edges`` (40) × 4k gradients, twice the ``edges`` (20) × 4k of the coarser
  levels (seventeenth session). The selection has a bias of its own — the dropped weak gradients still shape y
  (the kernel step on the true image: mean error ratio 0.59 with every gradient, 1.09 with the selection, README)
  — and every gradient of an estimated z is far worse; a reading, not tested: the finest level's z, at the
  smallest σ_t after the most HQS pairs, is the estimate whose weaker gradients are most worth keeping.
  **Tuned constant**: 40 against 20, the only alternative tried, on eight Levin captures (the six failures of
  the fifteenth-session default, im1_kernel6, im3_kernel6, im4_kernel2/3/4/7, and two successes, im2_kernel3 and
  im4_kernel8): a lower error ratio on seven (im4_kernel3 6.14 → 2.13, im1_kernel6 3.61 → 2.23), the same on
  im4_kernel2 (5.18 → 5.19); then run once on all 32 (27/32 at ER ≤ 3, mean ER 2.11 against 26/32, 2.48) and
  on BSD68 at three noise levels (README).
* **Final image** (fifteenth session): the returned image is not the last E-step's but a separate non-blind
  deconvolution under the final kernel: x restarted from y, one HQS pair per σ of the finest level's schedule
  (the schedule of DPIR, Zhang et al. 2021: one pair per level of a decreasing σ), every channel of an RGB y with
  the gray prior. More pairs per σ sharpen the kernel but not the image: on ten Levin captures under the
  four-pair kernels, 1 / 2 / 4 pairs per σ gave a mean PSNR of 30.03 / 29.61 / 28.89 dB against 28.70 dB for the
  last E-step's image (one pair best on 8 of 10 and above the E-step's image on all 10; issue 11's harness, README).
  The pass adds 8 denoiser calls to the EM's 128.
* **Polishing** (twentieth session): after the finest level, ``polish`` (2) rounds of a final pass under the current
  kernel (as in "Final image": x restarted from y, one HQS pair per σ of the finest level's schedule) and a kernel
  step on its image, with the finest level's edge budget and the covariance term of the EM's own steps (the full
  trace by default), at the last σ_t until the twenty-third session and at the photograph's noise level since
  ("Polishing at the noise level" below). Within the finest level x is carried from one iteration to the next, so its image
  keeps the trace of the kernels before; the final pass's image depends on the current kernel only and is the
  better estimate of x ("Final image"): a kernel step on it is an EM step with a better E-step. A round costs the
  final pass's ``iters`` (8) denoiser calls. Measured (README, "Polishing the kernel"): on the 32 Levin captures
  27/32 and 29/32 at ER ≤ 3 from the large and small initialisations (26/32, 28/32 without), a lower median error
  ratio (1.80, 1.90 against 1.92, 2.12) and the same kernel error; on 16 BSD68 photographs at σ_y = 0.01 the same
  successes and error ratios with an 8 % lower kernel error; 57 s per Levin capture instead of 41.
  The refinement's kept-pixel term in these steps instead (screened from the nineteenth-session default's saved
  kernels, issue 11's harness) helps the Levin captures more (mean ER 2.22 → 2.08, a lower ER on 21 of 32) but on
  BSD68 photographs at σ_y = 0.01 lets the kernels fall apart into specks (mean kernel error 0.584 → 0.700, test066
  0.57 → 0.86): a smoother image fits a sharper kernel, whose final pass deconvolves less — the no-blur trap's
  feedback, which the full term holds.
  **Tuned constant**: 2 rounds, for the time goal (three took 58 s per Levin capture against the goal's 60); in the
  screen the error ratios still fell at the third round. Since the twenty-seventh session ``polish`` is 3 and the
  third round runs on the kept start only ("Two starts"), which costs one final pass instead of two rounds.
* **Polishing at the noise level** (twenty-third session): the polishing rounds' ``full`` (or ``kept``) trace is
  taken at ``SIGMA_END_PER_NOISE`` · σ_y, the photograph's own noise level, even where that is below the prior's
  ``sigma_min`` and the denoiser's σ_t stop there (``polish_covariance="noise"``; ``"denoiser"``, the last σ_t, is the
  engine before). The trace measures how uncertain the image is given the photograph; the floor is a limit of the
  denoiser (not trained below ``sigma_min``), not of the photograph. On the Levin captures (σ̂_y ≈ 0.0029,
  1.4 σ̂_y = 0.0041 against ``sigma_min`` = 0.01) the term at σ_t was ≈ 6× what their noise calls for, a ridge that
  spreads the kernel's mass: the default's estimates have a median effective support (1/Σh²) 1.65× the published
  kernels' there, against 0.89× on BSD68 photographs at σ_y = 0.01, where the floor does not bind. Nothing is tuned
  (the noise rule's own factor); a photograph with 1.4 σ_y ≥ ``sigma_min`` (σ_y ≥ 0.0071 for natural-gray-small:
  BSD68 at 0.01 and 0.02, the ``make demo`` photo) gets bit-identical results, and a noise-free y polishes without
  the term (joint MAP steps from the EM's kernel). Only the polishing: the same level in every kernel step (an option
  measured and removed again) helped the captures (large initialisation: 28/32 at ER ≤ 3, mean ER 2.03, kernel error
  0.525 against 27/32, 2.18, 0.556; effective support 1.51×) but not the photographs at σ_y = 0.003 (first 8: 4/8,
  mean ER 3.05, kernel error 0.482 against 4/8, 2.85, 0.438; test066 3.52 → 5.04) — while the kernel forms, the
  stronger ridge keeps it away from the no-blur kernel, as for the refinement above. Measured (README, "Polishing
  at the photograph's noise level"): on the 32 Levin captures 27/32 at ER ≤ 3, mean ER 2.11, kernel error 0.536
  against 27/32, 2.18, 0.556 from the large initialisation (a lower error ratio on 25 of 32) and 29/32, 2.02, 0.538
  against 29/32, 2.13, 0.558 from the small one; on BSD68 at σ_y = 0.003 (first 8) 4/8, mean ER 2.82, kernel error 0.449 against
  4/8, 2.85, 0.438 (the kernel error higher on 7 of 8, the error ratio lower on 4).
* **Polishing with the edges' flanks** (twenty-sixth session): the polishing rounds' kernel steps keep, besides the
  selected edge gradients, every pixel within ``polish_flanks`` (1) of one — the flanks of the kept edges — with
  the ``full`` trace scaled by the grown count over the selected one, so that the covariance term keeps its weight
  per kept pixel (the ``kept`` form, a trace over the kept pixels, grows so by itself). The ranking keeps the
  steepest pixel of each edge and drops its flanks, whose gradients a blur spreads the edge into: from the true
  image the selection alone makes the kernels about a pixel too wide (README, "What the yardstick allows"), and
  here the final pass's image, the best estimate the engine has, supplies them. Growing the selection before the
  finest level's steps instead was worse (an earlier session, README), as is a larger budget of ranked gradients
  in the polishing (measured, README): the flanks, not more edges. Without the scaling the term loses weight
  against a data term over ≈ 2.8× the pixels, and on BSD68 photographs at σ_y = 0.01 the kernels grew noisier
  (kernel error 0.456 → 0.516); with it 0.430. No constant is tuned: one pixel is the smallest flank. Measured
  (README, "Polishing with the edges' flanks"): on the 32 Levin captures 28/32 at ER ≤ 3, mean ER 1.75, kernel
  error 0.499 against 29/32, 1.95, 0.522 (a lower error ratio on 28 of 32; im4_kernel7 2.35 → 4.08, where the two
  starts' images are equally sparse and the large start's worse kernel is kept); on BSD68 (first 8) at σ_y = 0.01
  8/8, 1.64, 0.430 against 8/8, 1.61, 0.456 and at σ_y = 0.003 6/8, 2.64, 0.414 against 6/8, 2.64, 0.413.
  ``polish_flanks=0`` is the engine before.
* **Two starts** (twenty-fourth session): ``init="both"`` (the default) runs all of the above from the ``large`` and
  from the ``small`` initialisation and keeps the result whose final image has the lower :func:`gradient_sparsity`
  ‖∇x‖₁/‖∇x‖₂ (Krishnan, Tay & Fergus 2011: lowest for a sharp image, raised by blur and by the ringing of a wrong
  kernel, the same for any scaling of x). The two starts lead to kernels that differ on most Levin captures,
  neither better across the board, and a capture's outcome is decided at the coarse levels, where it is sensitive
  (a 12 % lower σ_t there turned im2_kernel2's 7×7 kernel into a horizontal bar: README). Nothing is tuned; it
  doubles the cost. Measured (README, "Two starts, the sharper result kept"): on the 32 Levin captures 29/32 at
  ER ≤ 3, mean ER 1.99, kernel error 0.528 against 27/32, 2.11, 0.536 from the large start and 29/32, 2.03, 0.538
  from the small one; on BSD68 (first 8) at σ_y = 0.01 8/8, 1.60, 0.445 against 8/8, 1.64, 0.449 (large) and at
  σ_y = 0.003 5/8, 2.69, 0.415 against 4/8, 2.82, 0.449.
  **The kept start polished on** (twenty-seventh session): the starts are compared after ``compare_after`` (2) of
  the ``polish`` (3) rounds, on the final pass under that kernel, and the kept one alone goes on to the last round,
  whose kernel step fits the compared image itself: the result is the kept start's own run with 3 rounds, at the
  cost of one more final pass (≈ 3 s on a Levin capture) instead of a third round for each start. The choice
  itself is close to a coin flip on the Levin captures — it agrees with the better start on 18 of 32, and neither
  the data residual, the denoiser's residual at ten levels, a Gaussian (DSM) estimate of the prior's log-density
  nor a Laplace estimate of the marginal likelihood agrees on more than 21 (README, "Choosing between the starts")
  — so it is made early and the rounds saved go to the kept kernel, whose polishing still improves at the third
  round. Measured (README, "The kept start polished on"): on the 32 Levin captures 28/32 at ER ≤ 3, mean ER
  1.68, kernel error 0.500, 30.12 dB against 28/32, 1.75, 0.499, 30.02 dB (a lower error ratio on 23 of 32); on
  BSD68 (first 8) at σ_y = 0.01 8/8, 1.63, 0.428 against 8/8, 1.64, 0.430 and at σ_y = 0.003 6/8, 2.68, 0.418
  against 6/8, 2.64, 0.414 (the error ratio lower on 3 and 2 of 8): on these synthetic blurs, whose kernels are
  nearer the truth, the round changes little and moves the estimate toward the polishing's own fixed point, which
  is not the true kernel (README, "Choosing between the starts"). ``compare_after`` ≥ ``polish`` polishes both
  starts fully, as before.
* **Repeated texture** (twenty-ninth session): the polishing rounds' kernel steps leave out the gradients where the
  image they fit, the final pass's, repeats itself within the kernel's support — :func:`edge_repetition` above
  ``repetition`` (0.2): stripes of two periods or more. There a kernel and its copy offset by one period blur the
  image alike, and a blur along the stripes leaves them unchanged, so their edges — strong, and straight enough for
  the usefulness ranking, whose 5-pixel window is narrower than a period — pull the estimate toward a sum of
  copies with streaks along the stripes (the striped shirt of Levin's fourth image: README). The repetition is
  measured on the image estimate, where a blur's own echoes are gone: on the blurry y a multi-lobed kernel makes
  single strokes look repeated (im4_kernel4: the eyes and the nose marked, not the shirt). Only in the polishing,
  whose final pass is the sharpest estimate: at the finest level, on the coarser level's image upsampled, the
  smoothed steps of a staircase pass for stripes (im2_kernel6 ER 1.69 → 3.24; on the true image none of its
  strongest edges passes 0.2). One map per round, ≈ 0.7 s at k = 31 on a 255² capture.
  **Tuned constant**: 0.2 against 0.1 on six Levin captures (im4_kernel2/4/7/8, im1_kernel1, im3_kernel6; on the
  true image 0.1 marks a quarter of the face's strongest edges too, 0.2 one in 70 and 46 % of the shirt's), with
  the exclusion at the finest level too, its map reused in the polishing: mean ER 2.84 against 3.24 (the engine
  before: 3.07). Measured (README, "Repeated texture left out of the polishing"): on the 32 Levin captures 29/32 at
  ER ≤ 3, mean ER 1.61, kernel error 0.498 against 28/32, 1.68, 0.500 (im4_kernel7 3.90 → 1.92); on BSD68 (first 8)
  8/8, 1.63, 0.429 and 6/8, 2.67, 0.420 at σ_y = 0.01 and 0.003 against 8/8, 1.63, 0.428 and 6/8, 2.68, 0.418.
  ``repetition=0`` is the engine before.
* **Edges of every direction** (thirty-fourth session; measured and left off, ``edge_bins=4``): Cho & Lee's (2009)
  selection, as Pan et al.'s code does it (``threshold_pxpy_v1``: 20 × the kernel width per bin, the count ``edges``
  stands for), keeps the gradients whose score reaches the highest threshold that leaves ``edges`` × k of them in
  each of four bins of the gradient's direction, 45° apart (:func:`select_edges`), where the engine keeps the
  ``edges`` × 4k highest scores whatever their direction. An edge constrains the kernel across its direction only
  (a blur along an edge leaves it unchanged), so on a photograph whose strongest edges run one way (a brick façade)
  the kernel's extent along them is left to the few other edges that make the count, and to the covariance term,
  which spreads mass where the data do not hold it: faint arms along the dominant edges (README, "Smaller and
  larger shakes"). Nothing tuned (the four bins and the count are Cho & Lee's). Measured (README, "Edges of every
  direction"): with the true image in place of z the binned selection fits better kernels (32 Levin captures: mean
  error ratio 0.98 against 1.09); in the EM the 32 captures move within what rounding does (two roundings: 31/32,
  mean ER 1.67 and 28/32, 1.77 against 29/32, 1.74 and 28/32, 1.71), and on 16 BSD68 photographs under turned
  Levin kernels it is worse (mean ER 2.28 against 2.09, kernel error 0.562 against 0.498, higher on 11 of 16), under
  random camera shake mixed (first 8: mean ER 2.09 against 2.18, kernel error 0.602 against 0.536, higher on 5). A
  reading: the threshold keeps more gradients of the dominant directions, weak ones among them, and the data term
  grows against a covariance term that does not — a count of exactly ``edges`` × k per bin (screened, not kept) is
  less worse on the BSD68 photographs (mean ER 2.13), but still worse.
* **Second differences** (thirty-fifth session, the default, ``second_order=0.5``): Cho & Lee's (2009) kernel step
  fits the second differences of the image beside the first, ∂xx and ∂yy at half the first differences' weight and
  ∂xy at a quarter (their ω = 25, 12.5, 6.25), here at the kept edge pixels of the first differences they are made
  of. In Fourier the data term weights a kernel frequency ω by Σ_d |D_d(ω)|², ≈ |ω|² for the first differences,
  against the covariance term's flat c‖h‖²: the fine structure of the kernel (a thin stroke against a blob of the
  same extent) is what the data hold least; the second differences add ≈ |ω|⁴ there. They also see the ends of an edge's ramp, which the
  first differences at the kept (steepest) pixels miss: on the true image (im2_kernel6 blurred by its own kernel,
  σ_y = 0.003) the finest level's selection fits a kernel at kernel error 0.293 instead of 0.342 (0.109 and 0.097
  with every gradient). The covariance term counts their variance too (:func:`gradient_covariance_trace`). Nothing
  tuned: the weights are Cho & Lee's. Measured (README, "Second differences in the kernel step"): on the 32 Levin
  captures in two roundings 29/32, mean ER 1.63, kernel error 0.493 and 30/32, 1.57, 0.489 against 29/32, 1.74,
  0.499 and 28/32, 1.71, 0.515 (im3_kernel6 succeeds in both; im4_kernel2 and im4_kernel4 still fail); on
  photographs nothing was tuned on neutral in error ratio and mixed in kernel error (16 BSD68 photographs under
  turned Levin kernels at σ_y = 0.01: mean ER 2.13 against 2.09, kernel error 0.555 against 0.498; the first 8 at
  0.003: 2.89 against 2.79, 0.453 against 0.457; at 0.02: 1.11 against 1.07, 0.802 against 0.641; random camera
  shake, first 8: 2.08 against 2.18, 0.510 against 0.536): the kernel error grows with the noise, the second
  differences of y carrying three times the first differences' noise variance. ``second_order=0`` is the engine
  before. **The polishing on the first differences alone** (thirty-sixth session, the default,
  ``polish_second_order=0``): the loss at σ_y ≳ 0.01 comes from the polishing rounds, which fit the kernel on the
  final pass's image at the photograph's own noise level, at full resolution, where the second differences of y are
  mostly noise (their share of signal, 1 − N₂/E₂ with N₂ the same second differences of white noise at σ̂_y: 0.03–0.80
  on the Levin captures, 0.02–0.28 on BSD68 at σ_y = 0.01–0.02, 0.9–1 at the coarse levels); the pyramid, whose
  resampling averages the noise and where the kernel's shape forms, keeps them. Nothing tuned (the split follows
  the reading; the weights are Cho & Lee's). Measured (README, "Second differences in the kernel step"): the
  Levin captures unchanged in count and mean ER, the kernel error at σ_y = 0.02 back to the first differences'
  (0.646 against 0.802 and 0.641), at 0.01 lower; with them at the coarse levels only (the finest level on the
  first differences too, screened) the photographs gain as much, but 28/32 and 27/32 captures.
* **Coarse to fine**: image scales (√½)^l down to a kernel of ``min_kernel`` pixels; each kernel is stretched
  by the scale ratio to start the next finer level; x restarts from y at every level. ``warm_image=True`` starts
  each finer level's image from the coarser level's instead (its interior upsampled, replicate-padded), as issue 11
  lists among the known ingredients: measured worse (sixteenth session, issue 11's harness, all 32 Levin captures,
  large init: 21/32 at ER ≤ 3, mean ER 4.29, median 2.28, kernel error 0.587 against the default's 26/32, 2.48,
  2.16, 0.567; a lower error ratio on 18 captures, e.g. im3_kernel6 4.90 → 3.45, but one success gained,
  im1_kernel6 3.61 → 2.91, against six lost, among them im2_kernel2 1.53 → 60.8 and im1_kernel7 1.97 → 3.49).
  A reading, not tested: the coarser image was deconvolved under the coarser kernel, which the stretching widens,
  so the finer level deconvolves again what was already deconvolved and the coarser level's errors carry upward.
* **Attention** (nineteenth session): every denoiser call runs inside
  :meth:`~lit_blind.priors.Prior.local_attention` (``attention="local"``): a UNet whose self-attention spans the
  whole image attends within windows of its training size instead (:class:`~lit_blind.priors.WindowedAttention`).
  natural-gray-small was trained on 32 × 32 patches, so its middle block saw 8 × 8 tokens; on a 288 × 288 image
  it attended over 5,184, which cost ≈ 30 % of the EM's time (README). No constant is chosen: the window is the
  training size. Measured (README, "The denoiser's attention"): the same denoising PSNR on BSD68, the EM 1.45×
  faster on the Levin captures (the method alone 60.1 → 41.3 s per image) with kernels that differ from the
  global attention's in both directions (26/32 at ER ≤ 3 against 27/32 from the large initialisation, a lower
  error ratio on 15 of 32; 28/32 against 27/32 from the small one, lower on 20 of 32); on BSD68 at three noise
  levels the same success counts (14/16, 4/8, 8/8) with mean error ratios within 0.07 (README).
  ``attention="global"`` is the engine before.
* **Precision** (twenty-fifth session): every denoiser call runs inside
  :meth:`~lit_blind.priors.Prior.precision` (``precision="auto"``): on a device that computes in bfloat16
  natively (a CPU with AMX or AVX512-BF16, a recent GPU) the network's convolutions run in bfloat16 under autocast,
  its weights channels-last; the EM's own arithmetic (CG, kernel steps, the covariance term) stays in float64.
  The denoiser is ≈ 78 % of the EM's time in float32 (profile of one Levin capture: 31 of 40 s); in bfloat16 one call
  on a 288 × 288 image takes 242 ms instead of 500 ms at a denoising PSNR 0.03 dB lower on BSD68
  (``benchmarks/precision.py``), and the EM from both starts runs 1.64× faster (58.7 s against 96.1 s per Levin
  capture, one core). Nothing is tuned. Measured (README, "The denoiser in bfloat16"): on the 32 Levin captures
  29/32 at ER ≤ 3, mean ER 1.95, kernel error 0.522 against float32's 29/32, 1.99, 0.528 (a lower error ratio on
  18 of 32, the largest changes im2_kernel1 2.38 → 1.69 and im2_kernel4 1.83 → 2.60: the coarse levels' sensitivity
  of "Two starts"); on BSD68 (first 8) at σ_y = 0.01 8/8, 1.62, 0.456 against 8/8, 1.60, 0.445 and at σ_y = 0.003
  6/8, 2.65, 0.413 against 5/8, 2.69, 0.415, at σ_y = 0.02 8/8, 1.06, 0.674 against 8/8, 1.05, 0.655.
  ``covariance="tweedie"`` keeps float32 (its central differences of the denoiser with a step of σ/100 would drown
  in bfloat16's rounding); ``precision="32-true"`` is the engine before. Since the thirtieth session the network's
  activations are channels-last too (:func:`~lit_blind.priors.channels_last_output`): ≈ 170 ms per call, the EM
  ≈ 1.3× faster again, the same computation rounded differently — and the EM's outcome on a capture is sensitive to
  rounding: on the 32 Levin captures the mean error ratio moved 1.61 → 1.78 and the count 29 → 28 of 32, per capture
  in both directions (README, "Channels-last activations, and what rounding does to the Levin numbers").
* **Large photographs** (thirty-second session): the EM's cost grows with the pixels (an 800 × 800 RGB photograph
  takes ≈ 9 minutes on one core), while a k × k kernel is determined by far fewer of them. ``window="auto"`` runs the
  pyramid and the polishing rounds before the starts are compared on the :func:`auto_window` square,
  ``WINDOW_PER_KERNEL`` · k pixels a side but at least ``WINDOW_MIN`` (372: 12 · 31 at the default k; each side
  capped at y's), that :func:`kernel_window` finds richest in the gradients the kernel step ranks first (magnitude
  times :func:`edge_usefulness`), an integer ``window`` on a square of that side; the last polishing round then
  refits the kernel to the whole of y (one final pass and one kernel step on it), and the final pass deconvolves the
  whole of y. The noise level is estimated on the whole of y. ``window="full"`` (the default) estimates everything
  on all of y, the engine before. Measured (README, "Large photographs"), on data nothing was tuned on: faster (an
  800 × 800 Köhler shot 206 s instead of 558; 1.43× at 500 × 500) and, on most photographs, a little less accurate —
  on 24 Kodak photographs (500 × 500 crops, their luminance, each under a turned Levin kernel or a random camera
  shake, σ_y = 0.01; ``benchmarks/window.py --photos``) a higher error ratio on 16 of 24, its median change +0.24,
  one failure more (kodim19 1.80 → 4.54) and one rescued (kodim10 5.02 → 1.31); on five 512 × 512 Set12 photographs
  under two blurs each a mean error ratio of 1.89 against 1.80; on the four Köhler shots (real shake) the kernels'
  mutual agreement 0.450 against 0.479 (kernel error), their distance to reference kernels estimated on the whole
  shots by another method 0.461 against 0.424. A window holds fewer of the edges that constrain the kernel. So not the
  default: an option for photographs too large to wait for. Without the refit the Köhler kernels lay much farther from
  the references (0.610): Köhler's blur varies across the frame, and a kernel fitted to one part fits the rest less
  well. The factor 12 keeps the images the engine was tuned on (255 × 255 at k = 31) whole; it is not tuned. The
  floor (thirty-third session): at k = 15 twelve kernel sizes (180 pixels, half the pixels of the tuning images) gave
  a mean error ratio of 2.66 against 2.19 on the whole image, the 372-pixel square 2.08 against 2.23 (five Set12
  photographs, two sessions).

Written by hand: no library has a blind EM with a learned prior. The numerical constants (σ_t range,
ρ = 0.1, ``edges`` = 20) were chosen on four Levin images (im1_kernel1, im2_kernel4, im3_kernel6,
im4_kernel8) and one synthetic blur of im1 by kernel 1; the other 28 Levin images were not used for tuning.
``iters`` = 8 outer iterations per level (4 before) was chosen on the same four Levin images and three
synthetic blurs (the ``make demo`` photo, BSD68 test003 and test012 of ``benchmarks/synthetic_blind.py``):
mean error ratio 6.51 / 4.05 / 3.71 on the four captures and 3.25 / 2.34 / 2.39 on the synthetic three at
4 / 8 / 12 iterations, so more alternations per level help on both kinds of blur and saturate at about 8.
``edge_window`` = 5 (Xu & Jia's usefulness, new in the eighth session) against off and against the kernel
size, on seven Levin images (the four above and im4_kernel4/5/7, the striped shirt) and the three synthetic
blurs: mean error ratio 6.82 / 4.96 / 7.11 on the captures, 2.45 / 2.42 / 2.54 on the synthetic ones; then
run once on all 32 (README). ``refine`` = 2 against 4 and 8 (the whole finest level) on eight Levin captures
(im1_kernel6, im1_kernel8, im2_kernel1, im2_kernel4, im3_kernel6, im4_kernel5/6/8): mean error ratio 3.26 /
3.37 / 3.25, kernel error 0.605 / 0.603 / 0.590 (none: 3.52, 0.626) — longer refinements add little; then run
once on all 32 and on BSD68 at three noise levels (README).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.fft import next_fast_len
from scipy.sparse.linalg import eigsh
from torch import Tensor

from lit_blind._checks import check_choice, check_image, check_positive
from lit_blind._limits import ATTENTIONS, COVARIANCES, POLISH_COVARIANCES, PRECISIONS, SIGMA_Y_MAX
from lit_blind.deconv import DeblurResult
from lit_blind.io import LUMA, to_channels
from lit_blind.metrics import noise_level
from lit_blind.physics import data_fidelity, image_gradient, image_gradient_adjoint, prox_data_unchecked
from lit_blind.priors import Prior

# σ_t ends at this multiple of the photograph's noise level, no lower than the prior's sigma_min (module
# docstring): the earlier fixed end 0.015, tuned on synthetic blurs at σ_y = 0.01, over the median noise estimate
# (metrics.noise_level, biased upward by texture) of 16 BSD68 photographs blurred at σ_y = 0.01, 0.0110
SIGMA_END_PER_NOISE = 1.4
# the kernel step's pruning drops 8-connected components below this fraction of the kernel's mass (prune_kernel)
PRUNE_MASS = 0.05
# the last REFINE kernel steps of the finest level count the covariance over the kept edge pixels only (module
# docstring, "Refinement")
REFINE = 2
# E-step pairs per outer iteration at the finest level (``inner`` at the coarser ones; module docstring, "Finest level")
FINEST_INNER = 4
# kernel steps on the final pass's image after the finest level (module docstring, "Polishing")
POLISH = 3
# init="both" compares the starts after this many polishing rounds; the kept one goes on to POLISH (module docstring,
# "Two starts")
COMPARE_AFTER = 2
# the polishing's kernel steps keep the pixels within this distance of a kept edge gradient too (module docstring,
# "Polishing with the edges' flanks")
POLISH_FLANKS = 1
# init="both" runs the EM from each of these starts, the paper's two initialisations (§5), and keeps the result whose
# image has the lower gradient_sparsity (module docstring, "Two starts")
STARTS = ("large", "small")
# the history entries of marginal_em recorded once per outer iteration
ITERATION_KEYS = ("level", "sigma", "covariance", "data_fidelity", "score_evals", "seconds")
# the polishing's kernel steps leave out the gradients whose edge_repetition on the fitted image exceeds this (module
# docstring, "Repeated texture"); 0: none
REPETITION = 0.2
# gradients the kernel step keeps at the finest level, in units of 4k (``edges`` at the coarser ones; module docstring,
# "Finest level")
FINEST_EDGES = 40.0
# the kernel step's edge selection counts its gradients over this many bins of the gradient's direction (select_edges):
# 1, the highest whatever their direction; Cho & Lee's four were measured and left off (module docstring, "Edges of
# every direction")
EDGE_BINS = 1
# the weight of the second differences beside the first in the kernel step (module docstring, "Second differences"):
# Cho & Lee's; 0 fits Levin et al.'s first differences alone, as before the thirty-fifth session
SECOND_ORDER = 0.5
# their weight in the polishing rounds (module docstring, "Second differences"): the first differences alone there
POLISH_SECOND_ORDER = 0.0
# window="auto" estimates the kernel on a window of this many kernel sizes a side, no smaller than WINDOW_MIN pixels, and
# deconvolves the whole photograph under it (module docstring, "Large photographs")
WINDOW_PER_KERNEL = 12
# the smallest auto square: twelve sizes of the default 31×31 kernel, where the rule was measured; at k = 15 twelve sizes
# (180 pixels) were worse than the whole image and 372 pixels were not (thirty-third session, README)
WINDOW_MIN = 372


def auto_window(kernel_size: int) -> int:
    """The side of ``window="auto"``'s square for a ``kernel_size`` × ``kernel_size`` kernel."""
    return max(WINDOW_PER_KERNEL * int(kernel_size), WINDOW_MIN)


def kernel_window(y: Tensor, side: int, edge_window: int = 5) -> tuple[int, int, int, int]:
    r"""(top, left, height, width) of the ``side`` × ``side`` part of ``y`` ``(1, 1, H, W)`` (each side capped at
    the image's) whose gradients weigh most by :func:`kernel_step`'s ranking, magnitude times
    :func:`edge_usefulness` over ``edge_window`` pixels: the part of a large photograph with the most isolated
    straight edges, where a kernel is best determined (Hu & Yang 2012 select regions for the same reason, with a
    learned score). Sums over every window by cumulative sums; the first maximum in raster order."""
    H, W = y.shape[-2:]
    h, w = min(int(side), H), min(int(side), W)
    gx, gy = image_gradient(y)
    score = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt()
    if edge_window:
        score = score * edge_usefulness(y, int(edge_window))
    # the gradient grid is (H − 1, W − 1): a window of h × w pixels holds (h − 1) × (w − 1) of its gradients
    c = F.pad(score[0, 0].double(), (1, 0, 1, 0)).cumsum(0).cumsum(1)
    sums = c[h - 1 :, w - 1 :] - c[: H - h + 1, w - 1 :] - c[h - 1 :, : W - w + 1] + c[: H - h + 1, : W - w + 1]
    top, left = divmod(int(sums.argmax()), sums.shape[1])
    return top, left, h, w


def kernel_normal_equations(gs: list[Tensor], ys: list[Tensor], k: int) -> tuple[Tensor, Tensor]:
    r"""Normal equations (M, b) of :math:`\min_h \sum_d \|g_d \star h - y_d\|^2` (valid convolution, g larger
    than y by k − 1) in the flipped kernel index m: :math:`b_m = \sum_i g(i + m)\,y(i)` exactly and
    :math:`M_{m_1 m_2} \approx R(m_2 - m_1)`, the autocorrelation of the part of g seen through the valid
    window (Toeplitz approximation; exact up to strips of k pixels at the border). Shapes (k², k²), (k²,)."""
    # any size from g's plus k on keeps the lags read here free of wrap-around: the next FFT-friendly one
    hp = next_fast_len(max(g.shape[-2] for g in gs) + k, real=True)
    wp = next_fast_len(max(g.shape[-1] for g in gs) + k, real=True)
    c = k // 2
    R, b = 0.0, 0.0
    for g, y in zip(gs, ys, strict=True):
        G = torch.fft.rfft2(g[0, 0], s=(hp, wp))
        b = b + torch.fft.irfft2(G * torch.fft.rfft2(y[0, 0], s=(hp, wp)).conj(), s=(hp, wp))[:k, :k]
        Gc = torch.fft.rfft2(g[0, 0, c : c + y.shape[-2], c : c + y.shape[-1]], s=(hp, wp))
        R = R + torch.fft.irfft2(Gc * Gc.conj(), s=(hp, wp))
    d = torch.arange(k, device=g.device)
    d = d[None, :] - d[:, None]
    M = R[(d % hp)[:, None, :, None], (d % wp)[None, :, None, :]]
    return M.reshape(k * k, k * k), b.reshape(-1)


def solve_kernel(M: Tensor, b: Tensor, reg: float | Tensor, iters: int = 300) -> Tensor:
    r""":math:`\operatorname{argmin}_{h \ge 0} \tfrac12 h^\top (M + \operatorname{diag}(\mathrm{reg})) h - b^\top h`
    (``reg`` a number or one weight per kernel entry) by FISTA from the clipped unconstrained solution (step
    1/λ_max; λ_max by Lanczos, scipy's ``eigsh``, ≈ 7× faster than ``eigvalsh``'s whole spectrum at k = 31 and
    equal to it within rounding)."""
    Q = M + torch.diag(torch.as_tensor(reg, dtype=M.dtype, device=M.device).expand(M.shape[0]))
    if Q.shape[0] > 2:
        # a seeded start vector: ARPACK's default is drawn anew at every call, and the result must be reproducible;
        # a generic one, not e.g. ones: Q is centrosymmetric, so a symmetric start never sees an antisymmetric mode
        q, v0 = Q.cpu().numpy(), np.random.default_rng(0).standard_normal(Q.shape[0])
        L = float(eigsh(q, k=1, which="LA", v0=v0, return_eigenvectors=False)[0])
    else:  # ARPACK needs more unknowns than wanted eigenvalues + 1
        L = float(torch.linalg.eigvalsh(Q)[-1])
    h = torch.linalg.solve(Q, b).clamp_min(0)
    z, t = h.clone(), 1.0
    for _ in range(int(iters)):
        h_new = (z - (Q @ z - b) / L).clamp_min(0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z, h, t = h_new + (t - 1) / t_new * (h_new - h), h_new, t_new
    return h


def edge_usefulness(y: Tensor, window: int) -> Tensor:
    r"""Xu & Jia's (2010) usefulness of the gradients of the blurry ``y`` ``(1, 1, H, W)``:
    :math:`r = \|\sum_N \nabla y\| / \sum_N \|\nabla y\|` over the ``window`` × ``window`` neighbourhood N of
    each pixel, shape ``(1, 1, H − 1, W − 1)`` (the grid of the gradient magnitude in :func:`kernel_step`). ≈ 1
    along an isolated straight edge, small in texture and in stripes narrower than the window, where gradients
    of opposite signs cancel: the structures that mislead a kernel step. Their constant 0.5 in the denominator
    (for 8-bit intensities) is left out, so r does not depend on the image's scale."""
    gx, gy = image_gradient(y)
    gx, gy = gx[..., :-1, :], gy[..., :, :-1]

    def box(a: Tensor) -> Tensor:
        return F.avg_pool2d(a, window, stride=1, padding=window // 2)

    return (box(gx) ** 2 + box(gy) ** 2).sqrt() / box((gx**2 + gy**2).sqrt()).clamp_min(torch.finfo(y.dtype).tiny)


def window_sums(a: Tensor, k: int) -> Tensor:
    """Sums of ``a`` ``(…, H, W)`` over the k × k window centred on each pixel (k odd), zero outside; by cumulative
    sums, so the cost does not grow with k (``avg_pool2d``'s does, k² per pixel: 31× slower on 64 maps of 254² at
    k = 31, ``benchmarks/repetition.py``; the float32 sums agree to 8e-6 of the largest)."""
    h = k // 2
    a = F.pad(a, (h + 1, h, h + 1, h)).cumsum(-1).cumsum(-2)
    return a[..., k:, k:] - a[..., :-k, k:] - a[..., k:, :-k] + a[..., :-k, :-k]


def edge_repetition(x: Tensor, k: int, chunk: int = 64) -> Tensor:
    r"""How strongly the gradients of the image ``x`` ``(1, 1, H, W)`` repeat, within a k × k kernel's support,
    as a texture of two periods or more does; shape ``(1, 1, H − 1, W − 1)``, the grid of :func:`edge_usefulness`.
    With :math:`c_d(p)` the correlation coefficient of ∇x and ∇x shifted by d over the k × k window around p,

    .. math:: \mathrm{rep}(p) = \max_{e} \min\{c_{2e}(p),\ c_{4e}(p),\ -c_{e}(p),\ -c_{3e}(p)\},
              \qquad 1 \le \|4e\|_\infty \le k - 1:

    positive where the gradients agree with themselves shifted by one and by two periods 2e and oppose themselves
    at the half periods — stripes. There a kernel and its copy offset by a period blur x alike (a blur along the
    stripes leaves them unchanged too), so their edges cannot tell the kernel from a sum of its copies (module
    docstring, "Repeated texture"). Along an isolated edge the gradients do not oppose themselves at any shift, and
    one pair of parallel strokes has no second period, so neither counts. Near the border the shifted window's energy
    counts pixels whose partners lie outside x, which only lowers |c_d|. Hand-written: no library computes it."""
    gx, gy = image_gradient(x.float())
    g = torch.cat([gx[..., :-1, :], gy[..., :, :-1]], 1)
    H, W = g.shape[-2:]
    energy = window_sums(g.pow(2).sum(1, keepdim=True), k)
    floor = (1e-6 * float(energy.max())) ** 2  # windows without gradients correlate with nothing
    r, R = (k - 1) // 4, k - 1
    gp = F.pad(g, (R, R, R, R))
    energy_p = window_sums(gp.pow(2).sum(1, keepdim=True), k)  # ∇x is zero outside: the shifted windows' energies

    def corr(shifts: list[tuple[int, int]]) -> Tensor:
        gd = torch.cat([gp[..., R + a : R + a + H, R + b : R + b + W] for a, b in shifts])
        ed = torch.cat([energy_p[..., R + a : R + a + H, R + b : R + b + W] for a, b in shifts])
        return window_sums((g * gd).sum(1, keepdim=True), k) / (energy * ed).clamp_min(floor).sqrt()

    half = [(a, b) for a in range(r + 1) for b in range(-r, r + 1) if a > 0 or b > 0]  # −e: the same pairs, moved
    rep = torch.full_like(energy, -1.0)
    for i in range(0, len(half), chunk):
        es = half[i : i + chunk]
        m = [corr([(n * a, n * b) for a, b in es]) for n in (1, 2, 3, 4)]
        rep = torch.maximum(rep, torch.stack([m[1], m[3], -m[0], -m[2]]).amin(0).amax(0, keepdim=True))
    return rep.to(x.dtype)


def select_edges(score: Tensor, gx: Tensor, gy: Tensor, n: int, bins: int = EDGE_BINS) -> Tensor:
    r"""The gradient pixels the kernel step keeps (bool, shaped as ``score``): those whose ``score`` reaches the
    highest threshold that keeps at least n/``bins`` of them in every one of ``bins`` bins of the gradient's direction
    (``gx``, ``gy``: its components on ``score``'s grid; a gradient and its opposite are one direction; a bin without
    a positive score does not count, and a score of 0, an excluded pixel, is never kept), so that edges of every
    direction constrain the kernel and none is cut short by the count — Cho & Lee's (2009) selection with four
    directions 45° apart, as Pan et al.'s code does it, whose count of 20 per direction and kernel pixel ``edges``
    is (module docstring, "Edges of every direction"). ``n`` or more pixels: where one direction dominates the
    photograph, its edges are kept down to the level of the weakest direction's. One bin (the default): exactly
    the ``n`` highest."""
    if bins <= 1:
        return score > score.flatten().kthvalue(score.numel() - n).values
    direction = torch.atan2(gy, gx) % math.pi  # [0, π)
    which = (direction * (bins / math.pi)).long().clamp_max(bins - 1)
    per = max(n // bins, 1)
    level = None
    for b in range(bins):
        s = score[(which == b) & (score > 0)]
        if s.numel():  # this bin's per-th highest score
            top = s.kthvalue(s.numel() - min(per, s.numel()) + 1).values
            level = top if level is None else torch.minimum(level, top)
    return (score >= level) & (score > 0) if level is not None else score > 0


def kernel_step(
    z: Tensor,
    y: Tensor,
    k: int,
    reg: float,
    edges: float = 20.0,
    masked_cov: bool = False,
    grad_var: tuple[Tensor, Tensor] | None = None,
    edge_window: int = 5,
    prune_mass: float = PRUNE_MASS,
    flanks: int = 0,
    exclude: Tensor | None = None,
    edge_bins: int = EDGE_BINS,
    second_order: float = SECOND_ORDER,
) -> Tensor:
    r"""M-step: :math:`\min_{h\ge0} \sum_d \|\partial_d z \star h - \partial_d y\|^2 + \mathrm{reg}\|h\|^2`,
    z ``(1, 1, H + k − 1, W + k − 1)``, y ``(1, 1, H, W)``, then :func:`prune_kernel` (components below
    ``prune_mass`` of the mass dropped). Only the largest gradients of z enter (``edges`` = 0 keeps all):
    ``edges`` · 4k of them with one bin of direction, at least ``edges`` · 4k/``edge_bins`` in each of
    ``edge_bins`` bins (:func:`select_edges`), ranked by their magnitude times :func:`edge_usefulness` of y over
    ``edge_window`` pixels (0: by the magnitude alone, as Cho & Lee 2009); ``reg`` is the covariance trace over all gradient pixels, so with ``masked_cov`` it
    is scaled by the kept fraction: a masked gradient carries the posterior variance of the kept pixels only
    (E‖mask ⊙ ∂x ⋆ h − ∂y‖² = ‖mask ⊙ ∂z ⋆ h − ∂y‖² + ‖h‖² Σ_kept var). With ``grad_var`` (the per-pixel variances of ∂_x z and ∂_y z, shaped as those
    gradients) ``reg`` is unused and each kernel entry m gets its own weight :math:`\sum_d \sum_i \mathrm{mask}_d(i+m)\,\mathrm{var}_d(i+m)` over the
    window that y sees: the exact expectation of the masked data term under independent gradient errors.
    ``flanks`` > 0 grows the kept set by the pixels within that (Chebyshev) distance of a kept one, the flanks of
    the kept edges, which the ranking leaves out (module docstring, "Polishing with the edges' flanks").
    ``exclude`` (bool, shaped as :func:`edge_usefulness`'s output) marks y's gradient pixels the selection leaves
    out (module docstring, "Repeated texture").
    ``second_order`` > 0 adds Cho & Lee's (2009) second differences to the sum over d, ∂xx and ∂yy at that weight
    and ∂xy at half of it, each at the kept pixels of the first differences it is made of (module docstring,
    "Second differences"); ``reg`` then counts their variance too (:func:`gradient_covariance_trace`), ``grad_var``
    the first differences' only.
    Returns a (1, 1, k, k) kernel (true convolution)."""
    zx, zy = image_gradient(z)
    gz = [zx, zy]
    masks = [torch.ones_like(g) for g in gz]
    if edges > 0:
        mag = (gz[0][..., :-1, :] ** 2 + gz[1][..., :, :-1] ** 2).sqrt()
        if edge_window:  # y's pixel i lies under z's pixel i + k // 2
            mag = mag * F.pad(edge_usefulness(y, int(edge_window)), (k // 2,) * 4)
        if exclude is not None:
            mag = mag * F.pad((~exclude).to(mag.dtype), (k // 2,) * 4)
        n = min(mag.numel() - 1, int(edges * 4 * k))
        keep = select_edges(mag, gz[0][..., :-1, :], gz[1][..., :, :-1], n, edge_bins).to(z.dtype)
        selected = keep.sum()
        if flanks:  # each kept pixel's neighbours within `flanks` pixels: the flanks of the kept edges
            keep = F.max_pool2d(keep, 2 * flanks + 1, stride=1, padding=flanks)
        masks = [F.pad(keep, (0, 0, 0, 1), mode="replicate"), F.pad(keep, (0, 1, 0, 0), mode="replicate")]
        gz = [g * m for g, m in zip(gz, masks, strict=True)]
        # the term per kept pixel: the kept-pixel form over the kept fraction, the full trace grown with the flanks
        reg = reg * float(keep.mean() if masked_cov else keep.sum() / selected)
    gy = list(image_gradient(y))
    if second_order:  # Cho & Lee's second differences, ∂xx and ∂yy at second_order, ∂xy at half of it
        w = math.sqrt(second_order)
        yx, yy = gy
        if edges > 0:
            kx = torch.maximum(keep[..., :, :-1], keep[..., :, 1:])
            ky = torch.maximum(keep[..., :-1, :], keep[..., 1:, :])
            mxx, myy = F.pad(kx, (0, 0, 0, 1), mode="replicate"), F.pad(ky, (0, 1, 0, 0), mode="replicate")
            mxy = keep
        else:
            mxx = myy = mxy = 1.0
        gz += [w * mxx * zx.diff(dim=-1), w * myy * zy.diff(dim=-2), w / math.sqrt(2) * mxy * zx.diff(dim=-2)]
        gy += [w * yx.diff(dim=-1), w * yy.diff(dim=-2), w / math.sqrt(2) * yx.diff(dim=-2)]
    M, b = kernel_normal_equations(gz, gy, k)
    if grad_var is not None:
        # Σ_i (mask·var)(i + m) over y's window, per flipped kernel index m (≥ 0 up to Hutchinson noise)
        window = [tuple(g.shape[-2:]) for g in gy[:2]]  # the first differences' (the variances are theirs only)
        reg = sum(
            F.avg_pool2d(m * v, w, stride=1) * (w[0] * w[1]) for m, v, w in zip(masks, grad_var, window, strict=True)
        )
        reg = reg.reshape(-1).clamp_min(0)
    h = solve_kernel(M, b, reg).reshape(1, 1, k, k).flip(-1, -2)
    if not bool(torch.isfinite(h).all()) or float(h.sum()) <= 0:
        raise ValueError(f"kernel step: no non-negative kernel fits the image gradients (sum {float(h.sum())})")
    return prune_kernel(h, min_mass=prune_mass)


def tweedie_gradient_variance(
    prior: Prior, x: Tensor, sigma: float, probes: int = 1, seed: int = 0
) -> tuple[Tensor, Tensor]:
    r"""Per-pixel posterior variances of the horizontal and vertical differences of the image given the noisy
    image ``x`` at level σ, by Tweedie: :math:`\operatorname{Cov}[x_0 \mid x] = \sigma^2 J_D(x)`, so
    :math:`\operatorname{var}(\partial_d x_0) = \sigma^2 \operatorname{diag}(\partial_d J_D \partial_d^\top)`.
    The diagonal is Hutchinson's estimate :math:`u \odot \partial_d J_D \partial_d^\top u` with Rademacher u on
    both gradient grids at once (the cross terms have zero mean), :math:`J_D w` by a central difference of the
    denoiser with step ε = σ/100 (float32 rounding ≈ 1e-7/ε ≪ the entries of J_D; the curvature error ε² is
    far below). Costs 2 × ``probes`` denoiser calls; shapes of :func:`~lit_blind.physics.image_gradient`."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    eps = sigma / 100
    out = [torch.zeros_like(g) for g in image_gradient(x)]
    for _ in range(int(probes)):
        u = [torch.randint(0, 2, o.shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1 for o in out]
        w = image_gradient_adjoint(*u)
        jw = (_denoise(prior, x + eps * w, sigma) - _denoise(prior, x - eps * w, sigma)) / (2 * eps)
        for o, ui, g in zip(out, u, image_gradient(jw), strict=True):
            o += ui * g
    return out[0] * sigma**2 / probes, out[1] * sigma**2 / probes


def prune_kernel(h: Tensor, rel: float = 0.05, min_mass: float = PRUNE_MASS) -> Tensor:
    """Entries below ``rel`` × max and 8-connected components below ``min_mass`` of the mass set to 0; unit sum;
    centre of mass moved to the centre pixel (integer shift). Pan et al. 2016's post-processing, with components
    dropped below 5 % of the mass instead of their 10 % (twelfth session): a long shake with a faint stretch
    (Levin's kernel 6) falls apart at the 5 %-of-maximum threshold into pieces of 5–10 % each, which 10 % removes at
    every kernel step so that the tail never returns. ``min_mass`` was chosen among 0.02, 0.05 and 0.1, each run
    once on all 32 Levin captures and on BSD68 blurs at σ_y = 0.003, 0.01 and 0.02 (README; 0.02 only on a
    subset of the captures, tenth session, where it was worse)."""
    a = h[0, 0].clamp_min(0).cpu().numpy().copy()
    a[a < rel * a.max()] = 0
    lab, n = ndimage.label(a > 0, structure=np.ones((3, 3)))
    if n > 1:
        mass = ndimage.sum(a, lab, range(1, n + 1))
        for i, m in enumerate(mass, 1):
            if m < min_mass * a.sum():
                a[lab == i] = 0
    a /= a.sum()
    k = a.shape[0]
    r = np.arange(k)
    cy, cx = (a.sum(1) * r).sum(), (a.sum(0) * r).sum()
    a = np.roll(a, (round(k // 2 - cy), round(k // 2 - cx)), (0, 1))
    return torch.from_numpy(a).to(h)[None, None]


def rescale_kernel(h: Tensor, size: int, ratio: float) -> Tensor:
    """The kernel stretched by ``ratio`` (a finer image scale: ratio > 1) into a ``size`` × ``size`` support,
    centre kept (bilinear), ≥ 0, unit sum."""
    k0 = h.shape[-1]
    u = (torch.arange(size, dtype=h.dtype, device=h.device) - size // 2) / ratio / max(k0 // 2, 1)
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    out = F.grid_sample(h, torch.stack([gx, gy], -1)[None], mode="bilinear", align_corners=True).clamp_min(0)
    return out / out.sum()


def gradient_covariance_trace(
    h: Tensor, shape: tuple[int, int], sigma: float, rho: float, second_order: float = SECOND_ORDER
) -> float:
    r""":math:`\operatorname{tr}\big(\nabla\, \sigma^2 (H^\top H/\rho + I)^{-1} \nabla^\top\big)`: the summed
    variance of the horizontal and vertical differences of the HQS image given z (circular blur on ``shape``,
    forward differences), by FFT; with ``second_order`` also that of the second differences :func:`kernel_step`
    fits, ∂xx and ∂yy at that weight, ∂xy at half of it."""
    hf = torch.fft.fft2(h[0, 0], s=shape)
    wy = 2 * math.pi * torch.fft.fftfreq(shape[0], dtype=h.dtype, device=h.device)[:, None]
    wx = 2 * math.pi * torch.fft.fftfreq(shape[1], dtype=h.dtype, device=h.device)[None, :]
    ax, ay = 2 - 2 * torch.cos(wx), 2 - 2 * torch.cos(wy)
    d2 = ax + ay + second_order * (ax**2 + ay**2 + ax * ay / 2)
    return float((d2 * sigma**2 / (hf.abs() ** 2 / rho + 1)).sum())


def resampled_noise_std(shape: tuple[int, int], size: tuple[int, int]) -> float:
    """The standard deviation of unit white noise on ``shape`` after the pyramid's resampling to ``size``
    (bilinear, antialiased), root mean square over the output pixels: the resampling is linear and separable,
    so the variance at an output pixel is the product of the squared weights summed along each axis, read
    exactly from the resampling of the unit vectors (≈ 0.67 × the scale for the antialiasing triangle filter)."""
    var = 1.0
    for n, m in zip(shape, size, strict=True):
        w = F.interpolate(
            torch.eye(n, dtype=torch.float64)[:, None, None, :], size=(1, m), mode="bilinear", antialias=True
        )
        var *= float((w**2).sum(0).mean())
    return math.sqrt(var)


def _hqs_prox(z: Tensor, y: Tensor, h: Tensor, rho: float) -> Tensor:
    """argmin_x ‖valid(h ⋆ x) − y‖² + ρ‖x − z‖²: :func:`~lit_blind.physics.prox_data` with γ = 1/ρ (CG from z,
    30 iterations at most), unchecked: y was validated at the entry and every kernel step checks h."""
    return prox_data_unchecked(z, y, h, 1 / rho, "valid", max_iter=30, tol=1e-6)


def _denoise(prior: Prior, x: Tensor, sigma: float) -> Tensor:
    """D(x, σ) in the prior's dtype, any size (σ was checked at the entry), returned in x's dtype; a non-finite
    output is an error naming the step (one check per image step). A batch (an RGB photograph's channels in the final
    pass) is denoised one image at a time, so that the network holds one channel's activations, not three (on the
    CPU in bfloat16 a 1024 × 1024 channel peaks at ≈ 1.8 GB, three at once at ≈ 3.5 GB; a 12-megapixel photograph's
    three would not fit in 24 GB); the values are the batch's up to the network's rounding (bitwise with one thread
    at 200 × 200; within 3e-4 with two threads at 520 × 500, where the threads split the work differently)."""
    p = next(prior.parameters(), None)
    with torch.no_grad():
        x_in = x.to(p.dtype) if p is not None else x
        z = torch.cat([prior._denoise_unchecked(one, sigma) for one in x_in.split(1)]).to(x.dtype)
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"image step: the prior's denoiser returned non-finite values at sigma={sigma:.4g}")
    return z


def e_step(
    x: Tensor, y: Tensor, h: Tensor, prior: Prior, sigma: float, rho: float, pairs: int
) -> tuple[Tensor, Tensor]:
    r"""The E-step of :func:`marginal_em` under a fixed kernel: ``pairs`` half-quadratic splitting pairs from
    ``x``, :math:`x_p = \operatorname{argmin}_x \|h\star x - y\|^2 + \rho\|x - z\|^2` (valid domain, CG) then
    :math:`z = D(x_p, \sigma)`. Returns (z, the last x_p). With many pairs a non-blind deconvolution with the prior
    (``benchmarks/kernel_residual.py``: how well a kernel explains the photograph). x ``(B, C, H + k − 1,
    W + k − 1)`` (e.g. y padded), y ``(B, C, H, W)``, h ``(1, 1, k, k)`` ≥ 0 (true convolution); σ in the prior's
    range; bad arguments are ValueErrors before any work."""
    y = check_image("y", y)
    x = check_image("x", x, channels=y.shape[1])
    h = check_image("h", h, channels=1)
    k = h.shape[-1]
    if h.shape[0] != 1 or h.shape[-2] != k or k % 2 == 0 or bool((h < 0).any()):
        raise ValueError(f"h must be one non-negative odd square kernel (1, 1, k, k), got shape {tuple(h.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x must have y's batch size {y.shape[0]}, got shape {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != (y.shape[-2] + k - 1, y.shape[-1] + k - 1):
        raise ValueError(f"x must be y's size plus the kernel's ({k} - 1) on each axis, got {tuple(x.shape)}")
    sigma = prior.check_sigma(sigma, "sigma")
    check_positive("rho", rho)
    if int(pairs) != pairs or pairs < 1:
        raise ValueError(f"pairs must be a positive integer, got {pairs!r}")
    return _e_step(x, y.to(x.dtype), h.to(x.dtype), prior, float(sigma), float(rho), int(pairs))


def _e_step(
    x: Tensor, y: Tensor, h: Tensor, prior: Prior, sigma: float, rho: float, pairs: int
) -> tuple[Tensor, Tensor]:
    """:func:`e_step` without validating its inputs (marginal_em checked them once at its entry)."""
    xp = x
    for _ in range(pairs):
        xp = _hqs_prox(x, y, h, rho)
        x = _denoise(prior, xp, sigma)
    return x, xp


def pyramid(kernel_size: int, min_kernel: int = 5, ratio: float = math.sqrt(0.5)) -> list[tuple[float, int]]:
    """(image scale, kernel size) of every level, coarse first: scales ratio^l, odd kernel sizes ≥ ``min_kernel``."""
    levels, s = [], 1.0
    while True:
        k = int(round(kernel_size * s))
        k += (k + 1) % 2
        if k < min_kernel and levels:
            break
        levels.append((s, k))
        if k < min_kernel:
            break
        s *= ratio
    return levels[::-1]


def sigma_schedule(levels: int, iters: int, sigma_start: float, sigma_end: float) -> np.ndarray:
    """The denoiser's levels σ_t of :func:`marginal_em`, shape ``(levels, iters)``: one row per pyramid level
    (coarse first), one column per outer iteration, geometric from ``sigma_start`` to ``sigma_end`` over the whole
    pyramid."""
    return np.geomspace(sigma_start, sigma_end, levels * iters).reshape(levels, iters)


def gradient_sparsity(x: Tensor) -> float:
    r"""Krishnan, Tay & Fergus's (2011) normalised sparsity :math:`\|\nabla x\|_1 / \|\nabla x\|_2` of an image
    ``(1, C, H, W)`` (the luminance of an RGB one), ∇ the horizontal and vertical differences stacked: lower for a
    sharper image with fewer artefacts, the same for any scaling of x — no constant (module docstring, "Two
    starts")."""
    g = torch.cat([d.flatten() for d in image_gradient(to_channels(x, 1))])
    return float(g.abs().sum() / g.norm())


def annealing_end(prior: Prior, sigma_y: float, sigma_start: float) -> float:
    """:func:`marginal_em`'s default ``sigma_end`` for a photograph of noise level ``sigma_y``:
    ``SIGMA_END_PER_NOISE`` · σ_y, no lower than the prior's ``sigma_min``, no higher than ``sigma_start``."""
    return min(sigma_start, max(prior.sigma_min, SIGMA_END_PER_NOISE * sigma_y))


def marginal_em(
    y: Tensor,
    prior: Prior,
    kernel_size: int = 31,
    *,
    iters: int = 8,
    inner: int = 2,
    finest_inner: int = FINEST_INNER,
    sigma_start: float = 0.05,
    sigma_end: float | None = None,
    rho: float = 0.1,
    covariance: str = "full",
    polish_covariance: str = "noise",
    sigma_y: float | None = None,
    edges: float = 20.0,
    finest_edges: float = FINEST_EDGES,
    edge_window: int = 5,
    prune_mass: float = PRUNE_MASS,
    refine: int = REFINE,
    polish: int = POLISH,
    polish_flanks: int = POLISH_FLANKS,
    repetition: float = REPETITION,
    compare_after: int = COMPARE_AFTER,
    warm_image: bool = False,
    kernel_image: str = "denoised",
    attention: str = "local",
    precision: str = "auto",
    min_kernel: int = 5,
    init: str | Tensor = "both",
    window: int | str = "full",
    edge_bins: int = EDGE_BINS,
    second_order: float = SECOND_ORDER,
    polish_second_order: float | None = POLISH_SECOND_ORDER,
    callback: Callable[[dict], None] | None = None,
) -> DeblurResult:
    r"""Blind deconvolution by coarse-to-fine EM with the prior's denoiser (see the module docstring).

    .. math:: h \leftarrow \operatorname{argmin}_{h \ge 0} \sum_d \|\partial_d z \star h - \partial_d y\|^2
              + \operatorname{tr}(\nabla C \nabla^\top)\,\|h\|^2,\qquad z = D(x_p, \sigma_t)

    ``sigma_y``: the noise level of ``y`` (white Gaussian, per channel, in [0, 1] units), estimated by
    :func:`~lit_blind.metrics.noise_level` when None; for an RGB ``y`` the level that counts is the luminance's,
    σ_y‖w‖ (w the luma weights, 0.668 σ_y), or the estimate on the luminance. ``sigma_start``, ``sigma_end``:
    the denoiser's levels σ_t, geometric over the whole pyramid (:func:`sigma_schedule`); ``sigma_end=None`` ends them at
    ``SIGMA_END_PER_NOISE`` (1.4) × ``sigma_y``, no lower than the prior's ``sigma_min`` and no higher than
    ``sigma_start`` (module docstring).
    ``covariance``: the covariance term of the kernel step (:data:`COVARIANCES`): ``full`` (the closed-form HQS
    covariance traced over the whole image), ``kept`` (the same trace over the kept edge pixels only),
    ``tweedie`` (the denoiser's per-pixel variance at the kept pixels, 2 more denoiser calls per outer
    iteration), ``hqs`` (the exact covariance of the E-step's Gaussian, σ_y²(HᵀH + ρI)⁻¹, at the noise level
    ``sigma_y``; a noise-free ``y`` makes it joint MAP) or ``none`` (joint MAP);
    see the module docstring. ``init``: the coarsest kernel, ``large`` (uniform over ``min_kernel`` pixels) or
    ``small`` (a 3×3 box), ``both`` (the default since the twenty-fourth session, ``large`` before: a run from each,
    the one whose image has the lower :func:`gradient_sparsity` kept; module docstring, "Two starts"), or a
    ``(1, 1, kernel_size, kernel_size)`` kernel (true convolution, ≥ 0, positive sum; normalised) resized to the coarsest level's kernel (bilinear,
    antialiased) — a warm start, e.g. to refine another method's estimate or, as ``benchmarks/em_fixed_point.py``
    does, to start from the true kernel. ``edges``, ``edge_window``: the edge selection of :func:`kernel_step`
    (``finest_edges`` in place of ``edges`` at the finest level, 20 before the seventeenth session;
    ``edge_window=0`` ranks the gradients by magnitude alone); ``prune_mass``: its pruning of kernel components
    below that fraction of the mass (:func:`prune_kernel`; 0.1 before the twelfth session);
    ``refine``: how many of the finest level's last kernel steps take the covariance term over the kept edge
    pixels only, as ``covariance="kept"`` does, for ``full`` and ``hqs`` (module docstring; every step when
    ``iters`` ≤ ``refine``; 0 before the thirteenth session). ``inner``: the E-step's HQS pairs per outer iteration
    at the coarser levels, ``finest_inner`` at the finest level (module docstring; ``inner`` everywhere before the
    fifteenth session). ``polish``: kernel steps after the finest level, each on the image of a final pass under the
    current kernel (module docstring, "Polishing"; 0 before the twentieth session, 2 before the twenty-seventh);
    ``compare_after``: with ``init="both"``, the polishing rounds after which the starts are compared, the kept one
    alone going on to ``polish`` (module docstring, "The kept start polished on"; ≥ ``polish`` polishes both fully, as
    before the twenty-seventh session); ``polish_covariance``: the level of
    their ``full``/``kept`` covariance term, ``noise`` (``SIGMA_END_PER_NOISE`` · ``sigma_y``, below the prior's
    ``sigma_min`` too; ``sigma_end`` when given) or ``denoiser`` (the last σ_t, as before the twenty-third session;
    module docstring, "Polishing at the noise level"); ``polish_flanks``: their kernel steps also keep the pixels
    within that distance of a kept edge gradient (:func:`kernel_step`'s ``flanks``; module docstring, "Polishing with
    the edges' flanks"). ``edge_bins``: the bins of the gradient's direction over which :func:`select_edges`
    counts (1: the ``edges`` · 4k highest whatever their direction; 4: Cho & Lee's, measured and left off; module
    docstring, "Edges of every direction"). ``second_order``: the weight of the second differences beside the first
    in the pyramid's kernel steps and covariance terms (:func:`kernel_step`; 0: the first alone; module docstring,
    "Second differences"); ``polish_second_order``: theirs in the polishing rounds (None: ``second_order``'s, as in
    the thirty-fifth session). ``repetition``: the polishing's kernel steps leave out the gradients whose
    :func:`edge_repetition` on the final pass's image exceeds it (module docstring, "Repeated texture"; 0: none, as
    before the twenty-ninth session). ``warm_image``: start each finer level's image from the coarser level's, upsampled,
    instead of from y (module docstring, "Coarse to fine": measured worse, so off). ``kernel_image``: the image the
    kernel step fits, ``denoised`` (z = D(x_p, σ_t)) or ``hqs`` (the E-step's x_p; module docstring, "M-step"). ``attention``:
    ``local`` runs every denoiser call inside :meth:`~lit_blind.priors.Prior.local_attention` (a UNet's
    self-attention within windows of its training size; nineteenth session), ``global`` lets it span the whole
    image, diffusers' default and the engine's before (module docstring, "Attention"). ``window``: the part of y the
    kernel is estimated on, ``full`` (all of y), ``auto`` (a square of :func:`auto_window` pixels a side,
    ``WINDOW_PER_KERNEL`` · ``kernel_size`` but at least ``WINDOW_MIN``, chosen by :func:`kernel_window`; a y no larger
    than it is all of y) or an integer side ≥ ``kernel_size``; the last polishing round refits
    the kernel to all of y and the final pass deconvolves all of y (module docstring, "Large photographs"). ``precision``: the
    network's arithmetic, :meth:`~lit_blind.priors.Prior.precision` (``auto``: bfloat16 where the device computes in
    it natively, float32 elsewhere; ``32-true``, the engine's before the twenty-fifth session; ``bf16-mixed``; module
    docstring, "Precision"), the one in force in ``history["precision"]``; ``history["window"]``: (top, left, height,
    width) of the part of y the kernel was estimated on. Everything but the last polishing round and the returned
    image (the levels, the other rounds, the callback's ``x`` until then) is on that part.
    ``y`` ``(1, C, H, W)`` in [0, 1] with valid boundaries (a real photograph); an RGB ``y`` with a gray prior
    has its kernel estimated on the luminance and each channel deconvolved under that kernel (the finest
    level's σ schedule, the prior applied per channel). Returns the image of the final non-blind pass under the
    final kernel (module docstring, "Final image") on the (H + k − 1, W + k − 1) domain, the kernel
    ``(1, 1, k, k)`` (true convolution), θ = the flattened kernel, and a history with one entry per outer
    iteration (``level``, ``sigma``, ``covariance``, ``score_evals``, ``seconds``; a polishing round counts as one more
    iteration of the finest level at its last σ_t, its kernel also in ``history["polish"]``), ``history["sigma_y"]`` (the
    noise level used: the luminance's for an RGB ``y``), every level's final kernel in ``history["scales"]`` and
    ``history["warnings"]`` ("kernel size may be too small" when more than 5 % of the kernel's mass lies on the
    border of its support: on the 64 Levin estimates of the thirteenth-session default, whose true kernels all
    fit, the border held at most 4.1 %; on the fifteenth session's, 6.9 % on im4_kernel1 (large), a false alarm,
    and under 5 % on the other 63). ``callback`` gets a dict per outer
    iteration: ``level``, ``iteration``, ``total`` (outer iterations in all), ``sigma``, ``x``, ``kernel``,
    ``data_fidelity`` (½‖h ⋆ x − y‖² at the current level, also in ``history``), ``score_evals``. With
    ``init="both"`` the history holds the outer iterations of both starts in order (``score_evals`` and ``seconds``
    counted from the beginning of the first), the start of each in ``history["init"]`` (and in the callback's
    ``init``), the kept start's ``scales`` and ``polish``, ``history["chosen"]`` (the start kept) and
    ``history["starts"]`` (per start, at the comparison: ``sparsity``, ``kernel``, ``score_evals`` of that start).

    Example::

        res = marginal_em(y, load_prior("natural-gray-small"), kernel_size=31)
    """
    y = check_image("y", y)
    if y.shape[0] != 1 or y.shape[1] not in {prior.channels, 3 if prior.channels == 1 else prior.channels}:
        raise ValueError(
            f"y must be one image (1, C, H, W) with C = {prior.channels} (the prior's channels)"
            + (" or 3 (RGB: kernel on the luminance, image per channel)" if prior.channels == 1 else "")
            + f", got shape {tuple(y.shape)}"
        )
    if int(kernel_size) != kernel_size or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if kernel_size > min(y.shape[-2:]):
        raise ValueError(f"kernel_size {kernel_size} must not exceed the image size {tuple(y.shape[-2:])}")
    for name, v in (
        ("iters", iters),
        ("inner", inner),
        ("finest_inner", finest_inner),
        ("min_kernel", min_kernel),
        ("edge_bins", edge_bins),
    ):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    sigma_start = prior.check_sigma(sigma_start, "sigma_start")
    if sigma_end is not None:
        sigma_end = prior.check_sigma(sigma_end, "sigma_end")
        if sigma_end > sigma_start:
            raise ValueError(f"sigma_end must not exceed sigma_start ({sigma_start}), got {sigma_end}")
    if isinstance(init, Tensor):
        init = check_image("init", init, channels=1)
        if init.shape != (1, 1, kernel_size, kernel_size) or bool((init < 0).any()) or float(init.sum()) <= 0:
            raise ValueError(
                f"init must be 'small', 'large' or a non-negative (1, 1, {kernel_size}, {kernel_size}) kernel with a "
                f"positive sum, got shape {tuple(init.shape)} and sum {float(init.sum()):.3g}"
            )
    else:
        check_choice("init", init, (*STARTS, "both"))
    if isinstance(window, str):
        check_choice("window", window, ("auto", "full"))
    elif isinstance(window, bool) or int(window) != window or window < kernel_size:
        raise ValueError(
            f"window must be 'auto', 'full' or an integer side of at least kernel_size ({kernel_size}), got {window!r}"
        )
    check_choice("covariance", covariance, COVARIANCES)
    check_choice("polish_covariance", polish_covariance, POLISH_COVARIANCES)
    check_choice("kernel_image", kernel_image, ("hqs", "denoised"))
    check_choice("attention", attention, ATTENTIONS)
    check_choice("precision", precision, PRECISIONS)
    if covariance == "tweedie" and precision == "bf16-mixed":
        raise ValueError(
            "precision must be '32-true' or 'auto' with covariance='tweedie' (its central differences of the denoiser "
            "need float32), got 'bf16-mixed'"
        )
    if sigma_y is not None and not 0 < float(sigma_y) <= SIGMA_Y_MAX:
        raise ValueError(f"sigma_y must be in (0, {SIGMA_Y_MAX}] for an image in [0, 1], got {sigma_y!r}")
    check_positive("rho", rho)
    check_positive("edges", edges, allow_zero=True)
    check_positive("finest_edges", finest_edges, allow_zero=True)
    so = check_positive("second_order", second_order, allow_zero=True)
    pso = so if polish_second_order is None else check_positive("polish_second_order", polish_second_order, True)
    if check_positive("prune_mass", prune_mass, allow_zero=True) >= 1:
        raise ValueError(f"prune_mass must be in [0, 1) (a fraction of the kernel's mass), got {prune_mass!r}")
    if not isinstance(warm_image, bool):
        raise ValueError(f"warm_image must be True or False, got {warm_image!r}")
    for name, v in (
        ("refine", refine),
        ("polish", polish),
        ("polish_flanks", polish_flanks),
        ("compare_after", compare_after),
    ):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if check_positive("repetition", repetition, allow_zero=True) >= 1:
        raise ValueError(f"repetition must be in [0, 1) (a correlation; 0: off), got {repetition!r}")
    if int(edge_window) != edge_window or edge_window < 0 or (edge_window and edge_window % 2 == 0):
        raise ValueError(f"edge_window must be 0 (off) or an odd positive integer, got {edge_window!r}")
    y = y.to(torch.float64)
    rgb, y_rgb = y.shape[1] == 3 and prior.channels == 1, y
    if rgb:  # estimate the kernel on the luminance
        y = to_channels(y, 1)
    if sigma_y is None:  # estimated on the image the kernel is estimated on: the luminance for an RGB y
        sigma_y = noise_level(y)
    else:  # σ_y per channel: white noise of the channels is σ_y‖w‖ in the luminance Σ w_c y_c
        sigma_y = float(sigma_y) * (math.hypot(*LUMA) if rgb else 1.0)
    # the kernel estimated on the window of y with the most useful edges (module docstring, "Large photographs"); the
    # noise level above on the whole of y
    top, left, (wh, ww) = 0, 0, y.shape[-2:]
    side = None if window == "full" else auto_window(kernel_size) if window == "auto" else int(window)
    if side is not None and side < max(wh, ww):  # larger than the square on one side at least
        top, left, wh, ww = kernel_window(y, side, int(edge_window))
    cropped = (wh, ww) != tuple(y.shape[-2:])
    y_whole, y = y, y[..., top : top + wh, left : left + ww]
    # the polishing rounds' covariance term at the photograph's noise level, below the prior's sigma_min too (module
    # docstring, "Polishing at the noise level"), where the denoiser's σ_t stop
    noise_end = sigma_end if sigma_end is not None else min(sigma_start, SIGMA_END_PER_NOISE * sigma_y)
    if sigma_end is None:  # the annealing ends at the photograph's noise level (module docstring)
        sigma_end = annealing_end(prior, sigma_y, sigma_start)
    levels = pyramid(int(kernel_size), int(min_kernel))
    sigmas = sigma_schedule(len(levels), int(iters), sigma_start, sigma_end)
    starts = STARTS if isinstance(init, str) and init == "both" else (init,)
    # the last polishing round fits the kernel to the whole of y when it was estimated on a window (module docstring,
    # "Large photographs")
    windowed = int(polish) - (1 if cropped and polish else 0)  # polishing rounds on the window
    compared = min(int(compare_after), windowed) if len(starts) > 1 else windowed  # rounds before the choice
    total = len(starts) * (sigmas.size + compared) + int(polish) - compared  # outer iterations in all
    hist: dict = {key: [] for key in ITERATION_KEYS}
    hist |= {"scales": [], "polish": [], "sigma_y": sigma_y, "window": (top, left, wh, ww)}
    if len(starts) > 1:
        hist |= {"init": [], "starts": {}}
    noise_gen = torch.Generator().manual_seed(0)

    def covariance_term(
        h: Tensor, x: Tensor, xp: Tensor, sig: float, csig: float, evals: int, weight: float, noise: float | None = None
    ) -> tuple[float, tuple | None, int]:
        """(c, the per-pixel gradient variances or None, evals) of the kernel step under h after an E-step at σ_t =
        sig, the ``full``/``kept`` trace at the level csig (``polish_covariance``) with the second differences at
        ``weight``; ``noise``: the level's noise, for ``hqs``."""
        if covariance == "tweedie":  # at an input of the denoiser's noise level (module docstring)
            noisy = xp + sig * torch.randn(xp.shape, generator=noise_gen, dtype=xp.dtype).to(xp.device)
            gv = tweedie_gradient_variance(prior, noisy, sig)
            return float(gv[0].sum() + gv[1].sum()), gv, evals + 2
        if covariance == "hqs":  # σ_y²(HᵀH + ρI)⁻¹ = (σ_y²/ρ)(HᵀH/ρ + I)⁻¹
            return gradient_covariance_trace(h, tuple(x.shape[-2:]), noise / math.sqrt(rho), rho, weight), None, evals
        if covariance == "none":
            return 0.0, None, evals
        return gradient_covariance_trace(h, tuple(x.shape[-2:]), csig, rho, weight), None, evals

    def final_pass(yc: Tensor, h: Tensor) -> Tensor:
        """A non-blind deconvolution of ``yc`` (channels as a batch) under h: x from yc, one HQS pair per σ of the
        finest level's schedule (module docstring, "Final image")."""
        x = F.pad(yc, (h.shape[-1] // 2,) * 4, mode="replicate")
        for sig in sigmas[-1]:
            x = _e_step(x, yc, h, prior, float(sig), rho, 1)[0]
        return x

    def record(start, li: int, t: int, sig: float, c: float, x: Tensor, ys: Tensor, h: Tensor, evals: int) -> None:
        """One outer iteration (``h`` just estimated) into the history and to the callback."""
        f = float(data_fidelity(x, ys, h, "valid").sum())  # ½‖h ⋆ x − y‖² at this level, for the progress
        for key, v in (("level", li), ("sigma", sig), ("covariance", c), ("data_fidelity", f), ("score_evals", evals)):
            hist[key].append(v)
        hist["seconds"].append(time.perf_counter() - t0)
        state = dict(level=li, iteration=t, total=total, sigma=sig, x=x, kernel=h)
        if len(starts) > 1:
            hist["init"].append(start)
            state["init"] = start
        if callback is not None:
            callback(state | {"data_fidelity": f, "score_evals": evals})

    def coarse_to_fine(start, evals: int) -> tuple[Tensor, list, int]:
        """The EM over the pyramid from ``start``: (the finest level's kernel, every level's (k, kernel), evals)."""
        h, s_prev, coarser, scales = None, None, None, []
        for li, (s, k) in enumerate(levels):
            finest = s == 1.0
            pairs = int(finest_inner if finest else inner)  # HQS pairs per E-step at this level
            size = [max(k, round(n * s)) for n in y.shape[-2:]]
            ys = y if finest else F.interpolate(y, size=size, mode="bilinear", antialias=True, align_corners=False)
            if isinstance(start, Tensor) and h is None:  # the given kernel resized to this level, antialiased: point
                # sampling (rescale_kernel) can miss a thin kernel altogether when it shrinks it
                h = F.interpolate(
                    start.to(y), size=(k, k), mode="bilinear", antialias=True, align_corners=False
                ).clamp_min(0)
                h = h / h.sum()
            elif h is None:
                h = torch.zeros(1, 1, k, k, dtype=y.dtype, device=y.device)
                if start == "small":  # a 3×3 box
                    h[..., k // 2 - 1 : k // 2 + 2, k // 2 - 1 : k // 2 + 2] = 1 / 9
                else:  # the uniform kernel over the coarsest support
                    h[:] = 1 / k**2
            else:
                h = rescale_kernel(h, k, s / s_prev)
            s_prev = s
            x0 = ys  # warm_image: the coarser level's image upsampled (module docstring, "Coarse to fine")
            if warm_image and coarser is not None:
                x0 = F.interpolate(coarser, size=tuple(ys.shape[-2:]), mode="bilinear", align_corners=False)
            x = F.pad(x0, (k // 2,) * 4, mode="replicate")
            noise = None
            if covariance == "hqs":
                noise = sigma_y * (1.0 if finest else resampled_noise_std(tuple(y.shape[-2:]), tuple(size)))
            for t in range(int(iters)):
                sig = float(sigmas[li, t])
                x, xp = _e_step(x, ys, h, prior, sig, rho, pairs)
                evals += pairs
                c, gv, evals = covariance_term(h, x, xp, sig, sig, evals, so, noise)
                kept = covariance == "kept" or (finest and t >= iters - refine)  # the refinement (module docstring)
                fit = xp if kernel_image == "hqs" else x  # the image the kernel step fits (module docstring, "M-step")
                budget = finest_edges if finest else edges  # gradients kept by the kernel step (module docstring)
                h = kernel_step(
                    fit, ys, k, c, budget, kept, gv, edge_window, prune_mass, edge_bins=edge_bins, second_order=so
                )
                record(start, li, t, sig, c, x, ys, h, evals)
            scales.append((k, h.cpu()))
            coarser = x[..., k // 2 : x.shape[-2] - k // 2, k // 2 : x.shape[-1] - k // 2]  # on this level's y grid
        return h, scales, evals

    # polishing (module docstring, "Polishing"): kernel steps on the final pass's image with the covariance term at
    # the photograph's noise level ("Polishing at the noise level"); reported as further iterations of the finest
    # level at the last σ_t
    sig, li = float(sigmas[-1, -1]), len(levels) - 1
    half = int(kernel_size) // 2  # the final pass's image on y's grid: x[..., half:-half, half:-half]
    csig = noise_end if polish_covariance == "noise" else sig

    def polish_rounds(start, h: Tensor, x: Tensor | None, rounds: range, polished: list, evals: int) -> tuple:
        """The polishing rounds ``rounds`` from h (x: the final pass's image under h when already computed): (the
        last kernel, evals)."""
        for r in rounds:
            yr = y if r < windowed else y_whole  # the image this round fits; a given x is the window's
            if x is None or yr is y_whole:
                x = final_pass(yr, h)
                evals += sigmas.shape[1]
            c, gv, evals = covariance_term(h, x, x, sig, csig, evals, pso, sigma_y)
            exclude = None  # the repeated texture of the image fitted (module docstring, "Repeated texture")
            if repetition:
                exclude = edge_repetition(x[..., half:-half, half:-half], int(kernel_size)) > repetition
            h = kernel_step(
                x,
                yr,
                int(kernel_size),
                c,
                finest_edges,
                covariance == "kept",
                gv,
                edge_window,
                prune_mass=prune_mass,
                flanks=polish_flanks,
                exclude=exclude,
                edge_bins=edge_bins,
                second_order=pso,
            )
            polished.append(h.cpu())
            record(start, li, int(iters) + r, sig, c, x, yr, h, evals)
            x = None
        return h, evals

    # the denoiser's self-attention within windows of its training size (module docstring, "Attention")
    # its network at the precision asked (Prior.precision; float32 for tweedie's finite differences)
    with (
        prior.local_attention() if attention == "local" else contextlib.nullcontext(),
        prior.precision("32-true" if covariance == "tweedie" else precision) as hist["precision"],
    ):
        t0, evals, runs = time.perf_counter(), 0, []
        for start in starts:
            first = evals
            h, scales, evals = coarse_to_fine(start, evals)
            polished: list = []
            h, evals = polish_rounds(start, h, None, range(compared), polished, evals)
            x = None
            if len(starts) > 1:  # the image the starts are compared on (module docstring, "Two starts")
                x = final_pass(y, h)
                evals += sigmas.shape[1]
                sparsity = gradient_sparsity(x[..., half:-half, half:-half])
                hist["starts"][start] = {"sparsity": sparsity, "kernel": h.cpu(), "score_evals": evals - first}
            runs.append((start, h, x, scales, polished))
        if len(starts) > 1:  # the start whose compared image is the sparser (module docstring, "Two starts")
            runs = [min(runs, key=lambda run: hist["starts"][run[0]]["sparsity"])]
            hist["chosen"] = runs[0][0]
        start, h, x, hist["scales"], hist["polish"] = runs[0]
        # the kept start's remaining rounds (module docstring, "Two starts")
        h, evals = polish_rounds(start, h, x, range(compared, int(polish)), hist["polish"], evals)
        # the returned image: a separate non-blind pass under the final kernel, x restarted from y, one HQS pair per σ
        # of the finest level's schedule (module docstring, "Final image"); an RGB y per channel with the gray prior;
        # the compared image when no round followed
        if rgb or cropped or x is None or compared < int(polish):
            yc = y_rgb.transpose(0, 1) if rgb else y_rgb  # RGB: channels as a batch; prox_data broadcasts the kernel
            x = final_pass(yc, h)
            x = x.transpose(0, 1) if rgb else x
            evals += sigmas.shape[1]
        hist["score_evals"][-1] = evals
    ring = torch.cat([h[0, 0, [0, -1], :].flatten(), h[0, 0, 1:-1, [0, -1]].flatten()])
    hist["warnings"] = (
        [
            f"kernel size may be too small: the estimate has {float(ring.sum()):.1%} of its mass on the border of its {kernel_size}×{kernel_size} support"
        ]
        if float(ring.sum()) > 0.05
        else []
    )
    return DeblurResult(image=x, kernel=h, theta=h.flatten(1), history=hist)
