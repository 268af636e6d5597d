Feature: Customers' orders set stock aside in their dark store
  As the manager of a dark store
  I want every order to set aside exactly the goods it needs, or nothing at all
  So that pickers always find what was promised and we never sell what we do not have

  Background:
    Given a dark store "Riverside" serving "the river district"

  Scenario: An order sets stock aside without taking it off the shelf
    Given "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 3 "oat milk" from "Riverside"
    Then the order is accepted
    And "Riverside" shows 20 "oat milk" on hand, 3 reserved and 17 available

  Scenario: Orders placed at the same moment never sell more than the store holds
    Given "Riverside" stocks 10 "oat milk" with a reorder level of 2 and a target level of 30
    When 50 customers each order 1 "oat milk" from "Riverside" at the same moment
    Then 10 orders are accepted and 40 are refused for lack of "oat milk"
    And "Riverside" shows 10 "oat milk" on hand, 10 reserved and 0 available
    And no stock was created, lost or oversold

  Scenario: An app that sends the same order twice still gets one order
    Given "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 2 "oat milk" from "Riverside" with the request reference "basket-42"
    And the customer's app sends that order again with the same request reference
    Then both answers are the same order
    And the second answer says it repeats the first
    And "Riverside" shows 20 "oat milk" on hand, 2 reserved and 18 available

  Scenario: An order for more than the store has is refused and sets nothing aside
    Given "Riverside" stocks 4 "oat milk" with a reorder level of 2 and a target level of 30
    When a customer orders 5 "oat milk" from "Riverside"
    Then the order is refused because "oat milk" is short
    And "Riverside" shows 4 "oat milk" on hand, 0 reserved and 4 available

  Scenario: A basket with one short item sets nothing aside at all
    Given "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    And "Riverside" stocks 1 "rye bread" with a reorder level of 0 and a target level of 10
    When a customer orders from "Riverside":
      | product   | quantity |
      | oat milk  | 2        |
      | rye bread | 3        |
    Then the order is refused because "rye bread" is short
    And "oat milk" is not named as short
    And "Riverside" shows 20 "oat milk" on hand, 0 reserved and 20 available
    And "Riverside" shows 1 "rye bread" on hand, 0 reserved and 1 available
