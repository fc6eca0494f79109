// Package drift holds the statistics of COMPASS-ECDA's drift monitor: a
// window of production texts, embedded and assigned to the clusters of an
// adapter's selection, is compared with the Reference distribution those
// clusters were built from (Jensen-Shannon divergence, a chi-square test of
// homogeneity, rows in new regions), and a Monitor confirms drift when k of
// the last m windows have shifted.
package drift
