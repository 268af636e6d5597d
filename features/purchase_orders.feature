Feature: The warehouse reorders from its supplier
  As the manager of the central warehouse
  I want a product that runs low in the warehouse to be reordered from its supplier, once per need
  So that stores keep being refilled, and no delivery is booked in twice or lost

  Scenario: A shipment that leaves the warehouse low reorders up to its target
    Given the warehouse holds 10 "oat milk" and reorders at 5 up to 100
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends received
    And a purchase order of 100 "oat milk" is started
    And the purchase order ends received
    And its timeline reads: requested, confirmed, received
    And the warehouse has 100 "oat milk" left
    And "Riverside" shows 20 "oat milk" on hand, 6 reserved and 14 available
    And no stock was created, lost or oversold

  Scenario: A delivery lets the stores the empty warehouse could not refill be refilled
    Given the warehouse has no "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends compensated
    When an operator orders 50 "oat milk" from the supplier
    Then the purchase order ends received
    And a new replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends received
    And the warehouse has 34 "oat milk" left
    And "Riverside" shows 26 "oat milk" on hand, 6 reserved and 20 available
    And no stock was created, lost or oversold

  Scenario: A supplier that declines ends the purchase order without goods
    Given the supplier declines every order
    And the warehouse has no "oat milk"
    When an operator orders 50 "oat milk" from the supplier
    Then the purchase order ends cancelled
    And its timeline reads: requested, cancelled
    And the warehouse has 0 "oat milk" left
    And no stock was created, lost or oversold

  Scenario: An operator cancels a purchase order the supplier has not shipped yet
    Given the supplier takes 600 seconds to ship, and the orchestrator waits that long
    And the warehouse has no "oat milk"
    When an operator orders 50 "oat milk" from the supplier
    Then a second purchase order of "oat milk" is refused while it is open
    When the operator cancels the purchase order
    Then the purchase order ends cancelled
    And its timeline reads: requested, cancelling, cancelled
    And the warehouse has 0 "oat milk" left
    And no stock was created, lost or oversold
