"""analytics: monthly projections, insights and anomalies fed by transfer outcomes."""
