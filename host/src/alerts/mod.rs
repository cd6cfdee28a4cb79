//! Alert rules, evaluation, grouping and deliveries. Not built yet (a later issue).
