"""trec_eval-exact metrics, significance tests, leaderboards, gap analysis and reports. Never imports torch."""
