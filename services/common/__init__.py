"""What every service shares: settings base, Kafka client factory, auth, logging, broker."""
