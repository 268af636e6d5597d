Feature: A store running low is refilled from the central warehouse
  As the manager of a dark store
  I want a product that runs low to be refilled from the warehouse, once per need
  So that shelves stay stocked without anyone watching, and no goods go missing on the way

  Scenario: Low stock opens exactly one replenishment, however many orders notice it
    Given the delivery workers are stopped
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 11 "oat milk" with a reorder level of 10 and a target level of 30
    When 8 customers each order 1 "oat milk" from "Riverside" at the same moment
    Then 8 orders are accepted and 0 are refused for lack of "oat milk"
    And exactly one replenishment of "oat milk" for "Riverside" is open
    And no stock was created, lost or oversold

  Scenario: A replenishment brings the store back up to its target level
    Given the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends received
    And its timeline reads: requested, dispatched, received
    And 16 "oat milk" were shipped to "Riverside"
    And "Riverside" shows 26 "oat milk" on hand, 6 reserved and 20 available
    And the warehouse has 84 "oat milk" left
    And no stock was created, lost or oversold

  Scenario: An empty warehouse ends the replenishment without moving any stock
    Given the warehouse has no "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends compensated
    And the reason given is that the warehouse has none of this product to ship
    And its timeline reads: requested, compensated
    And no stock moved for the replenishment
    And "Riverside" shows 10 "oat milk" on hand, 6 reserved and 4 available
    And the warehouse has 0 "oat milk" left
    And no stock was created, lost or oversold

  Scenario: A delivery the store cannot take goes back to the warehouse
    Given deliveries fail at the store
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends compensated
    And its timeline reads: requested, dispatched, compensating, compensated
    And the warehouse has 100 "oat milk" left
    And "Riverside" shows 10 "oat milk" on hand, 6 reserved and 4 available
    And no stock was created, lost or oversold

  Scenario: A store left low by an empty warehouse is refilled at its next change
    Given the warehouse has no "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends compensated
    When the warehouse is restocked with 100 "oat milk"
    And the customer collects the order
    Then a new replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends received
    And "Riverside" shows 20 "oat milk" on hand, 0 reserved and 20 available
    And the warehouse has 84 "oat milk" left
    And no stock was created, lost or oversold
