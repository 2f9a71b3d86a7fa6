# Reference values for analysis/glmm.py (tests/test_glmm.py): simulates the datasets (seeded)
# and fits them with lme4's glmer. Run from this folder:  Rscript make_reference.R
# Needs Debian's r-base-core r-cran-lme4 r-cran-jsonlite.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})

simulate <- function(seed, n_p, clips_h, clips_a, per_person, beta0, beta_x, sd_p, sd_c, delay = FALSE) {
  set.seed(seed)
  clips <- data.frame(stimulus_id = sprintf("c%02d", seq_len(clips_h + clips_a)),
                      source = c(rep("human", clips_h), rep("ai", clips_a)))
  clips$b <- rnorm(nrow(clips), 0, sd_c)
  rows <- list()
  for (i in seq_len(n_p)) {
    k <- if (is.null(per_person)) nrow(clips) else sample(per_person, 1)
    take <- sort(sample(nrow(clips), k))
    a <- rnorm(1, 0, sd_p)
    d <- clips[take, ]
    d$participant_id <- sprintf("p%03d", i)
    d$delay_days <- if (delay) round(runif(1, 1, 8), 2) else 0
    d$x <- ifelse(d$source == "human", 0.5, -0.5)
    eta <- beta0 + beta_x * d$x + a + d$b + (if (delay) -0.15 * (d$delay_days - 4) else 0)
    d$recalled <- rbinom(nrow(d), 1, plogis(eta))
    rows[[i]] <- d[, c("participant_id", "stimulus_id", "source", "delay_days", "recalled")]
  }
  do.call(rbind, rows)
}

cases <- list(
  list(dataset = "balanced.csv", seed = 11, n_p = 40, h = 8, a = 8, per = NULL,
       b0 = 0.2, bx = 0.7, sp = 0.9, sc = 0.6, delay = FALSE),
  list(dataset = "unbalanced.csv", seed = 12, n_p = 60, h = 14, a = 9, per = 5:13,
       b0 = -0.4, bx = 0.5, sp = 0.7, sc = 0.8, delay = TRUE),
  list(dataset = "small_singular.csv", seed = 13, n_p = 15, h = 4, a = 4, per = NULL,
       b0 = 0.0, bx = 0.4, sp = 0.6, sc = 0.0, delay = FALSE)
)

fit_info <- function(fit, model, nagq) {
  cf <- summary(fit)$coefficients
  vc <- as.data.frame(VarCorr(fit))
  list(model = model, formula = deparse(formula(fit)), nAGQ = nagq,
       fixed = lapply(seq_len(nrow(cf)), function(i) list(
         term = rownames(cf)[i], estimate = cf[i, 1], se = cf[i, 2], z = cf[i, 3], p = cf[i, 4])),
       random = lapply(seq_len(nrow(vc)), function(i) list(group = vc$grp[i], variance = vc$vcov[i], sd = vc$sdcor[i])),
       theta = unname(getME(fit, "theta")),
       loglik = as.numeric(logLik(fit)), deviance_m2ll = -2 * as.numeric(logLik(fit)),
       singular = isSingular(fit),
       messages = as.list(fit@optinfo$conv$lme4$messages))
}

out <- list()
for (cs in cases) {
  d <- simulate(cs$seed, cs$n_p, cs$h, cs$a, cs$per, cs$b0, cs$bx, cs$sp, cs$sc, cs$delay)
  write.csv(d, cs$dataset, row.names = FALSE)
  d$x <- ifelse(d$source == "human", 0.5, -0.5)
  models <- list()
  f1 <- glmer(recalled ~ x + (1 | participant_id) + (1 | stimulus_id), data = d, family = binomial)
  models[[1]] <- fit_info(f1, "source", 1)
  f0 <- glmer(recalled ~ x + (1 | participant_id) + (1 | stimulus_id), data = d, family = binomial, nAGQ = 0)
  models[[2]] <- fit_info(f0, "source_nagq0", 0)
  # glmer's defaults stop PIRLS at a relative change of 1e-7 (tolPwrss) and Nelder-Mead at
  # FtolAbs 1e-5, so its deviance is up to ~1e-3 above the optimum of the Laplace deviance;
  # the same model with both tightened is the precise reference.
  tight <- glmerControl(tolPwrss = 1e-12, optCtrl = list(FtolAbs = 1e-12, FtolRel = 1e-14, XtolRel = 1e-12, maxfun = 1e5))
  ft <- suppressWarnings(glmer(recalled ~ x + (1 | participant_id) + (1 | stimulus_id), data = d,
                               family = binomial, control = tight))
  models[[length(models) + 1]] <- fit_info(ft, "source_tight", 1)
  if (cs$delay) {
    f2 <- glmer(recalled ~ x + delay_days + (1 | participant_id) + (1 | stimulus_id), data = d, family = binomial)
    models[[length(models) + 1]] <- fit_info(f2, "source_delay", 1)
    f3 <- suppressWarnings(glmer(recalled ~ x + delay_days + (1 | participant_id) + (1 | stimulus_id), data = d,
                                 family = binomial, control = tight))
    models[[length(models) + 1]] <- fit_info(f3, "source_delay_tight", 1)
  }
  out[[length(out) + 1]] <- list(dataset = cs$dataset, nobs = nrow(d), models = models)
}
ref <- list(generated_with = paste0(R.version.string, ", lme4 ", packageVersion("lme4"),
                                    ", glmer(family = binomial); models *_tight: glmerControl(tolPwrss = 1e-12, Nelder-Mead FtolAbs = 1e-12, FtolRel = 1e-14, XtolRel = 1e-12)"),
            datasets = out)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, pretty = TRUE), "reference_glmer.json")
